# A layers × heads heatmap of one score column: data has lines "layer head value".
# gnuplot -e "data='out/ablation.dat'; out='out/ablation.png'; what='ablation (nats)'" heatmap.gp
set terminal pngcairo size 700,420 font ",10"
set output out
if (!exists("name")) name = "models/kjv"
set title name.": ".what
set xlabel "head (original id)"
set ylabel "layer"
set yrange [] reverse
set xtics 1
set ytics 1
set palette defined (0 "white", 1 "orange", 2 "dark-red")
plot data using 2:1:3 with image notitle, \
     data using 2:1:(sprintf("%.2f", $3)) with labels font ",8" notitle
