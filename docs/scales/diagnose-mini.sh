#!/usr/bin/env bash
# Diagnosis of the mini scale (docs/scales.md). Every run is --resume-able: rerun to continue.
# Needs ADVKD_DATA_DIR (the offline CIFAR-10) and ADVKD_RUNS_DIR; ADVKD may name the advkd executable.
set -euo pipefail
A="${ADVKD:-advkd}"
R="$ADVKD_RUNS_DIR"
T=$R/pretrain-teacher/cifar10/wrn34-10-trades-mini-s0/best.safetensors     # the demo teacher
T12=$R/pretrain-teacher/cifar10/teacher-12ep/best.safetensors              # the same recipe, 3x the epochs
S="--student resnet18 --dataset cifar10 --preset mini --resume"
step() { echo "== $*" >&2; "$@"; }
# 1. the demo: TRADES teacher (resnet20 standing in for WRN-34-10) and its RSLAD student (resnet8)
step $A pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset mini --resume
step $A distill --method rslad --teacher "$T" $S
# 2. lead 1 (an element-mean KL has 1/C of a batch-mean KL's gradient, so 156 steps are too few):
#    the same RSLAD student with 5x the epochs, and (a diagnostic only, not the method) with its loss x C
step $A distill --method rslad --teacher "$T" $S --epochs 20 --set "milestones=[10,15]" --name rslad-5x
step $A distill --method rslad --teacher "$T" $S --set method.kl_scale=10
# 3. lead 2 (a weak teacher gives flat soft labels): the same student from a teacher trained 3x longer
step $A pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset mini --epochs 12 --set "milestones=[6,9]" --name teacher-12ep --resume
step $A distill --method rslad --teacher "$T12" $S --name rslad-teacher-12ep
# 4. the other students of AdaAD Table 2 that the leads concern, and the PGD-AT baseline
step $A pretrain-teacher --arch resnet18 --method pgd-at --dataset cifar10 --preset mini --resume
for m in ard adaad iad; do step $A distill --method $m --teacher "$T" $S; done
# 5. clean / FGSM / PGD-10 of every checkpoint on test images 0-999 (the lossless part of the offline test set)
for ck in "$R"/*/cifar10/*/best.safetensors; do step $A attack "$ck" --suite quick --n-examples 1000; done
