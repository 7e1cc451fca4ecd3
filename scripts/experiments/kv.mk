# KV cache compression experiments (scripts/experiments/README.md, "KV cache
# compression"). Every target is a file the programs write:
#   make -f scripts/experiments/kv.mk            the copy task table and plot
#   make -f scripts/experiments/kv.mk kv-ppl     perplexity and KL by policy and budget
#   make -f scripts/experiments/kv.mk BIN=...    with programs from elsewhere
# Needs a build (make build); the plots need gnuplot.
BIN ?= build/bin
RESULTS ?= scripts/experiments/results
KV_FILLER ?= 380
KV_LISTS ?= 16
# Intermediate files (token ids, saved log-probabilities, one .ppl per point).
KV_OUT ?= scripts/experiments/out/kv
PYTHON ?= /usr/bin/python3
STORIES ?= ../shared/models/stories260K

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DELETE_ON_ERROR:
.SECONDARY:

.PHONY: kv kv-ppl
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

# --- Perplexity and KL against the full cache, by policy and budget ---------
# infer --ppl --kv-policy SPEC scores held-out text as decode meets it: each
# window of KV_CTX tokens, its first half run as a prompt under the policy
# (decode's own priming), its second half forced one token per forward pass
# with the policy acting after every step; KL against the same windows
# scored with the full cache (--kv-policy full). Head-aware policies read
# the induction column of the model's head table.
KV_CTX ?= 512
KV_BUDGETS ?= 5 10 20 30 50
KV_POLICIES ?= window h2o snapkv pyramid adakv headkv razor duo
# Models: models/kjv on held-out KJV text; stories260K (when present) on its
# own samples (KV_STORY_LINES stories drawn at temperature 1 from BOS).
KV_MODELS ?= kjv $(if $(wildcard $(STORIES)/config.json),stories260K)
KV_STORY_LINES ?= 80
model_dir = $(if $(filter stories260K,$(1)),$(STORIES),models/kjv)
kv_table = $(if $(filter stories260K,$(1)),$(KV_OUT)/stories260K-heads.tsv,models/kjv/heads-induction.tsv)
kv_spec = $(1):budget=$(2)%$(if $(filter headkv razor duo,$(1)),:by=induction:scores=$(3))
# A point's file name is MODEL-POLICY-BUDGET.ppl: its parts, in a recipe.
point = $(word $(1),$(subst -, ,$*))
KV_POINTS = $(foreach m,$(KV_MODELS),$(foreach p,$(KV_POLICIES),$(foreach b,$(KV_BUDGETS),$(KV_OUT)/$(m)-$(p)-$(b).ppl)))

kv-ppl: $(RESULTS)/kv-ppl.tsv $(RESULTS)/kv-ppl.png $(RESULTS)/kv-kl.png

$(KV_OUT)/kjv.ids: tests/data/kjv-heldout.txt $(BIN)/tokenize
	@mkdir -p $(@D)
	$(BIN)/tokenize -m models/kjv/tokenizer.model --whole < $< > $@

# The model's own stories, BOS first on each line (llama2.c's format).
$(KV_OUT)/stories260K.ids: $(BIN)/decode
	@mkdir -p $(@D)
	seq $(KV_STORY_LINES) | sed 's/.*/1/' | $(BIN)/decode -m $(STORIES) -t 1 -n 480 --temp 1 --seed 11 | sed 's/^/1 /' > $@

# Induction scores need repeated spans: 40 lines of BOS, 50 random pieces, the same 50 again.
$(KV_OUT)/stories260K-heads.tsv: $(BIN)/infer
	@mkdir -p $(@D)
	$(PYTHON) -c 'import random; r = random.Random(0); \
	spans = [[r.randrange(259, 512) for _ in range(50)] for _ in range(40)]; \
	print("\n".join(" ".join(map(str, [1] + s + s)) for s in spans))' | \
	    $(BIN)/infer -m $(STORIES) -t 1 --head-stats -o $@

$(KV_OUT)/%-full.ppl: $(KV_OUT)/%.ids $(BIN)/infer
	$(BIN)/infer -m $(call model_dir,$*) -t 1 --ppl --ctx $(KV_CTX) --kv-policy full \
	    --save-logits $(KV_OUT)/$*-full.logprobs $< > $@

# One point: model, policy, budget %, PPL, its standard error, KL, its standard error, same top token %.
.SECONDEXPANSION:
$(KV_OUT)/%.ppl: $(KV_OUT)/$$(word 1,$$(subst -, ,$$*)).ids $(KV_OUT)/$$(word 1,$$(subst -, ,$$*))-full.ppl \
                 $$(call kv_table,$$(word 1,$$(subst -, ,$$*)))
	$(BIN)/infer -m $(call model_dir,$(call point,1)) -t 1 --ppl --ctx $(KV_CTX) \
	    --kl-base $(KV_OUT)/$(call point,1)-full.logprobs \
	    --kv-policy "$(call kv_spec,$(call point,2),$(call point,3),$(call kv_table,$(call point,1)))" $< | \
	awk -v OFS='\t' -v name=$* 'BEGIN { split(name, p, "-") } /^PPL =/ { ppl = $$3; se = $$5 } \
	     /^KLD =/ { kl = $$3; kse = $$5 } /^same top token/ { same = $$5; sub("%", "", same) } \
	     END { print p[1], p[2], p[3], ppl, se, kl, kse, same }' > $@

# What a policy keeps when it first acts: the share of the bytes of the first
# window's prompt frame (its first KV_CTX/2 + 1 tokens) it keeps (compress-kv's
# report; budgets below sink + recent are raised to it, razor and duo keep
# their protected heads whole).
$(KV_OUT)/%-prompt.kv: $(KV_OUT)/%.ids $(BIN)/infer
	head -n 1 $< | cut -d' ' -f1-$$(($(KV_CTX) / 2 + 1)) | $(BIN)/infer -m $(call model_dir,$*) -t 1 --kv --logits none > $@
$(KV_OUT)/%.kept: $(KV_OUT)/$$(word 1,$$(subst -, ,$$*))-prompt.kv $$(call kv_table,$$(word 1,$$(subst -, ,$$*)))
	$(BIN)/compress-kv -m $(call model_dir,$(call point,1)) -o /dev/null --report $@.report \
	    --policy "$(call kv_spec,$(call point,2),$(call point,3),$(call kv_table,$(call point,1)))" $< 2> /dev/null
	awk -F'\t' '$$2 == "all" { printf "%.1f\n", 100 * $$8 / $$7 }' $@.report > $@
	rm $@.report

# Rows: model, policy, budget %, PPL, its standard error, KL, its standard
# error, same top token %, and the share of the prompt's cache kept (%).
$(RESULTS)/kv-ppl.tsv: $(KV_POINTS) $(KV_POINTS:.ppl=.kept) $(foreach m,$(KV_MODELS),$(KV_OUT)/$(m)-full.ppl)
	@mkdir -p $(@D)
	{ printf 'model\tpolicy\tbudget_pct\tppl\tppl_se\tkl\tkl_se\tsame_top_pct\tkept_pct\n'; \
	  for m in $(KV_MODELS); do awk -v OFS='\t' -v m=$$m '/^PPL =/ { print m, "full", 100, $$3, $$5, 0, 0, 100, 100 }' \
	      $(KV_OUT)/$$m-full.ppl; done; \
	  for p in $(KV_POINTS); do paste $$p $${p%.ppl}.kept; done; } > $@.tmp
	mv $@.tmp $@

$(RESULTS)/kv-ppl.png: $(RESULTS)/kv-ppl.tsv scripts/experiments/kv-ppl.gp
	gnuplot -e "in='$<'; out='$@.tmp'; measure='ppl'; models='$(KV_MODELS)'" scripts/experiments/kv-ppl.gp
	mv $@.tmp $@

$(RESULTS)/kv-kl.png: $(RESULTS)/kv-ppl.tsv scripts/experiments/kv-ppl.gp
	gnuplot -e "in='$<'; out='$@.tmp'; measure='kl'; models='$(KV_MODELS)'" scripts/experiments/kv-ppl.gp
	mv $@.tmp $@
