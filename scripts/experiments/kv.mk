# KV cache compression experiments (issue 11; scripts/experiments/README.md,
# "KV cache compression"). Every target is a file the programs write:
#   make -f scripts/experiments/kv.mk            the copy task table and plot
#   make -f scripts/experiments/kv.mk BIN=...    with programs from elsewhere
# Needs a build (make build); the plot needs gnuplot.
BIN ?= build/bin
RESULTS ?= scripts/experiments/results
KV_FILLER ?= 50
KV_LISTS ?= 8

.PHONY: kv
kv: $(RESULTS)/kv-copy.tsv $(RESULTS)/kv-copy.png $(RESULTS)/kv-copy-protect.tsv

# Share of a 30-piece list copied after $(KV_FILLER) tokens of filler, per
# policy and budget, with decode applying the policy from the prompt on.
$(RESULTS)/kv-copy.tsv: $(BIN)/decode $(BIN)/infer $(BIN)/compress-kv scripts/experiments/kv-copy scripts/copy-test \
                        models/kjv/heads-induction.tsv
	@mkdir -p $(@D)
	scripts/experiments/kv-copy --bin $(BIN) --filler $(KV_FILLER) --lists $(KV_LISTS) > $@.tmp
	mv $@.tmp $@

$(RESULTS)/kv-copy.png: $(RESULTS)/kv-copy.tsv scripts/experiments/kv-copy.gp
	gnuplot -e "in='$<'; out='$@.tmp'" scripts/experiments/kv-copy.gp
	mv $@.tmp $@

# razor and duo with more or fewer heads kept whole (by the induction column).
$(RESULTS)/kv-copy-protect.tsv: $(BIN)/decode $(BIN)/infer $(BIN)/compress-kv scripts/experiments/kv-copy \
                                scripts/copy-test models/kjv/heads-induction.tsv
	@mkdir -p $(@D)
	scripts/experiments/kv-copy --bin $(BIN) --filler $(KV_FILLER) --lists $(KV_LISTS) --policies razor,duo \
	    --protect 10,25,50 --budgets 10,30 > $@.tmp
	mv $@.tmp $@
