#!/usr/bin/env bash
# What limits B-MTARD's robust accuracy at the small scale (docs/results-small.md, "B-MTARD at small").
# Two seeds of each change, every run --resume-able (rerun to continue); fp32 + channels-last.
# Needs ADVKD_DATA_DIR and ADVKD_RUNS_DIR, and the small teachers of
# `python -m benchmarks.reference_runs.side_by_side --preset small` (the baseline B-MTARD and RSLAD
# students come from that run too). ADVKD may name the advkd executable.
set -euo pipefail
A="${ADVKD:-advkd}"
R="$ADVKD_RUNS_DIR"
SEEDS="${SEEDS:-0 1}"
P="--dataset cifar10 --preset small --no-amp --channels-last --resume"
S="--student resnet18 $P"
T=$R/pretrain-teacher/cifar10
step() { echo "== $*" >&2; "$@"; }
# the small preset's two teachers (no-ops when side_by_side --preset small trained them already)
step $A pretrain-teacher --arch wrn34-10 --method trades $P
step $A pretrain-teacher --arch resnet56 --method natural $P
# the paper's schedule has 300 x 391 = 117,300 steps, small has 8 x 71 = 568: x206.5. EBB's temperature
# rate scaled by it is 0.2065 per step; NLB's weight rate scaled is over 1, and its update
# (w <- w - rate (w - target)) reaches the target at rate 1, so 1.0 is the scaled rate.
for s in $SEEDS; do
  step $A distill --method pgd-at $S --seed $s                                    # the bar, on this machine
  step $A distill --method bmtard $S --seed $s --set method.nlb=false             # NLB off: fixed 0.5 / 0.5
  step $A distill --method bmtard $S --seed $s --set method.ebb=false             # EBB off: temperatures stay 1
  step $A distill --method bmtard $S --seed $s --set method.tau_rate=0.2065       # EBB's rate scaled to the budget
  step $A distill --method bmtard $S --seed $s --set method.tau_rate=0.2065 --set method.weight_rate=1.0  # both rates scaled
done
# the clean teacher's strength: 1 epoch (weaker) and 3x the epochs (stronger) of the small recipe's 8
step $A pretrain-teacher --arch resnet56 --method natural $P --epochs 1 --set "milestones=[]" --name resnet56-natural-small-1ep
step $A pretrain-teacher --arch resnet56 --method natural $P --epochs 24 --set "milestones=[12,18]" --name resnet56-natural-small-24ep
for s in $SEEDS; do
  for t in 1ep 24ep; do
    step $A distill --method bmtard $S --seed $s --clean-teacher $T/resnet56-natural-small-$t/best.safetensors --name bmtard-clean-teacher-$t-s$s
  done
done
# a budget twice as long, for B-MTARD and for the PGD-AT bar
for s in $SEEDS; do
  for m in bmtard pgd-at; do
    step $A distill --method $m $S --seed $s --epochs 16 --set "milestones=[8,12]" --name $m-small-2x-s$s
  done
done
# clean and PGD-10 of every selected student (best.safetensors: B-MTARD's best W-Robust, the others' best PGD-10)
for ck in "$R"/distill/cifar10/*small*/best.safetensors; do
  step $A attack "$ck" --attacks clean,pgd10 --n-examples 1000 --format json > /dev/null
done
for t in 1ep 24ep; do step $A attack $T/resnet56-natural-small-$t/best.safetensors --attacks clean,pgd10 --n-examples 1000 --format json > /dev/null; done
