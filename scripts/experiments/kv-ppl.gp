# Perplexity or KL against the KV budget, one panel per model, one line per
# policy (kv.mk's kv-ppl.tsv).
# gnuplot -e "in='kv-ppl.tsv'; out='kv-ppl.png'; measure='ppl'; models='kjv stories260K'" kv-ppl.gp
set terminal pngcairo size 1100,480
set output out
set datafile separator "\t"
set xlabel "budget (% of the prompt's positions per KV head)"
set grid
set logscale y
col = measure eq "ppl" ? 4 : 6
set ylabel (measure eq "ppl" ? "perplexity (log scale)" : "KL from the full cache, nats (log scale)")
policies = "window h2o snapkv pyramid adakv headkv razor duo"
set multiplot layout 1, words(models)
do for [m in models] {
    set title m
    full = system(sprintf("awk -F'\t' '$1 == \"%s\" && $2 == \"full\" { print $4 }' %s", m, in))
    if (measure eq "ppl") {
        plot for [p in policies] in using (strcol(1) eq m && strcol(2) eq p ? $3 : NaN):(column(col)) \
                 with linespoints lw 2 title p, \
             full + 0 with lines dt 2 lc "black" title "full cache"
    } else {
        plot for [p in policies] in using (strcol(1) eq m && strcol(2) eq p ? $3 : NaN):(column(col)) \
                 with linespoints lw 2 title p
    }
}
unset multiplot
