#!/usr/bin/env bash
# Diagnosis of the mini scale (issue "Results that mean something on a CPU", docs/scales.md).
# Every run is --resume-able: rerun the script to continue. Needs ADVKD_DATA_DIR and ADVKD_RUNS_DIR.
set -euo pipefail
A="${ADVKD:-advkd}"
R="$ADVKD_RUNS_DIR"
T=$R/pretrain-teacher/cifar10/wrn34-10-trades-mini-s0/best.safetensors       # the demo teacher
T20=$R/pretrain-teacher/cifar10/teacher-20ep/best.safetensors                 # the same recipe, 5x the epochs
step() { echo "== $*" >&2; "$@"; }
# 1. the demo: teacher (TRADES, resnet20 stand-in for WRN-34-10) and RSLAD student (resnet8)
step $A pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset mini --resume
step $A distill --method rslad --student resnet18 --teacher "$T" --dataset cifar10 --preset mini --resume
# 2. the baselines and the element-mean distillers of AdaAD Table 2 at mini
step $A pretrain-teacher --arch resnet18 --method pgd-at --dataset cifar10 --preset mini --resume
for m in ard adaad; do step $A distill --method $m --student resnet18 --teacher "$T" --dataset cifar10 --preset mini --resume; done
# 3. lead 1 (too few steps for a loss whose gradient is 1/C of a batch-mean KL):
#    the same RSLAD student with 5x the epochs, and (diagnostic only, not the method) with the loss x C
step $A distill --method rslad --student resnet18 --teacher "$T" --dataset cifar10 --preset mini --epochs 20 --set "milestones=[10,15]" --name rslad-5x --resume
step $A distill --method rslad --student resnet18 --teacher "$T" --dataset cifar10 --preset mini --set method.kl_scale=10 --resume
# 4. lead 2 (a weak teacher gives flat soft labels): the same student from a teacher trained 5x longer
step $A pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset mini --epochs 20 --set "milestones=[10,15]" --name teacher-20ep --resume
step $A distill --method rslad --student resnet18 --teacher "$T20" --dataset cifar10 --preset mini --name rslad-teacher-20ep --resume
# 5. clean / FGSM / PGD-10 of every checkpoint on test images 0-999 (the lossless part of the offline test set)
for ck in $(ls "$R"/*/cifar10/*/best.safetensors); do step $A attack "$ck" --suite quick --n-examples 1000; done
