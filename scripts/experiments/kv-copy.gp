# The copy task against the KV budget, one line per policy (kv-copy's TSV).
# gnuplot -e "in='kv-copy.tsv'; out='kv-copy.png'" kv-copy.gp
set terminal pngcairo size 800,500
set output out
set datafile separator "\t"
set key autotitle columnhead outside right
set xlabel "budget (% of the cache per head)"
set ylabel "list pieces copied (%)"
set yrange [0:105]
set grid
full = system("awk -F'\t' '$1 == \"full\" { print 100 * $5 }' " . in)
policies = "window snapkv headkv razor duo"
plot for [p in policies] in using (strcol(1) eq p ? $2 : NaN):(100 * $5) with linespoints lw 2 title p, \
     full + 0 with lines dt 2 lc "black" title "full cache"
