# The pruning curve: held-out PPL and KL against the share of heads kept, per ranking.
# gnuplot -e "data='out/curve.tsv'; out='out/curve.png'; base=PPL" curve.gp
set terminal pngcairo size 1100,450 font ",10"
set output out
set datafile separator "\t"
if (!exists("name")) name = "models/kjv"
set multiplot layout 1,2 title name.": pruning heads, held-out text"
set xlabel "% of heads kept"
set xrange [105:5]
set key top left
set logscale y
set ylabel "perplexity"
set grid
plot for [m in "ablation induction random1 random2 random3"] \
     data skip 1 using (strcol(1) eq m ? $2 : NaN):4 with linespoints title m, \
     base with lines dashtype 2 lc rgb "gray" title "unpruned"
set ylabel "KL(unpruned || pruned), nats"
plot for [m in "ablation induction random1 random2 random3"] \
     data skip 1 using (strcol(1) eq m ? $2 : NaN):6 with linespoints title m
unset multiplot
