#!/usr/bin/env bash
# The commands that make the bundled model, in order: three seeds of one recipe, the student distilled from their
# ensemble, the shortcut scores of each, the finalize step, and the validation and test evaluations.
#
#   bash scripts/make_bundle.sh [STAGE]     STAGE: seeds, student, scores, finalize, test, publish (default: all, in order)
#   bash scripts/make_bundle.sh status      what is done, and the epoch each training run has reached
#
# Every step writes its own folder under $RUNS and is skipped once that folder's last file exists; training steps
# pass --resume, so a stopped sitting continues where it stopped. The test split is evaluated in the test stage only,
# once every choice is made, and never again once its metrics exist. The publish stage copies the scores into docs/
# and, where the bundle is better on the test split, the bundle into weights/ (scripts/publish_bundle.py); it commits
# nothing. A seed costs 48 epochs of train.py on the machine at hand (its log records the hours), the student about
# twice that (three teachers' forward passes per batch). Set RUNS, DATA or FORMATS to point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/chest_xray}
FORMATS=${FORMATS:-../shared/data/formats}
SEEDS=(1 2 3)
STUDENT_SEED=4
EPOCHS=48
RECIPE=(--data "$DATA" --no-pretrained --epochs "$EPOCHS" --size-schedule "128:30,176:10,224:8" --warmup-epochs 2
        --split-file weights/pneumonia-resnet50/split.json --augment shortcut-breaking --resume --no-finalize)
TEACHERS=()
for s in "${SEEDS[@]}"; do TEACHERS+=("$RUNS/r50-sb-seed$s"); done
STUDENT=$RUNS/r50-sb-student
BUNDLE=$RUNS/bundle-v5
ENSEMBLE=$RUNS/ensemble

step() { echo "== $(date +%H:%M) $*" >&2; }

seeds() {
    for run in "${TEACHERS[@]}"; do
        [ -f "$run/training_log.json" ] && continue
        step "training $run"
        python train.py "${RECIPE[@]}" --output-dir "$run" --seed "${run##*seed}"
    done
}

student() {
    [ -f "$STUDENT/training_log.json" ] && return
    step "training $STUDENT"
    python train.py "${RECIPE[@]}" --output-dir "$STUDENT" --seed "$STUDENT_SEED" --teachers "${TEACHERS[@]}"
}

shortcut_scores() {  # OUTPUT_DIR TITLE MODEL_ARGS...: the shortcut scores on validation, once
    local out=$1 title=$2
    shift 2
    [ -f "$out/shortcuts.json" ] && return
    step "shortcut scores of $title"
    python -m modeling.shortcuts "$@" --data "$DATA" --output-dir "$out" --title "$title"
}

scores() {
    for run in "${TEACHERS[@]}" "$STUDENT"; do
        shortcut_scores "$run/shortcuts" "$(basename "$run") (the image alone)" --model "$run" --precision bfloat16
    done
    shortcut_scores "$ENSEMBLE/shortcuts" "ensemble of seeds ${SEEDS[*]} (the image alone)" --ensemble "${TEACHERS[@]}"
    [ -f "$ENSEMBLE/eval-validation/metrics.json" ] || python evaluate.py --ensemble "${TEACHERS[@]}" --data "$DATA" \
        --split validation --output-dir "$ENSEMBLE/eval-validation" --robustness
}

finalize() {
    if [ ! -f "$BUNDLE/config.json" ]; then
        step "finalizing $STUDENT into $BUNDLE"
        python -m modeling.finalize "$STUDENT" --data "$DATA" --output-dir "$BUNDLE" --precision int8 --tta auto \
            --threshold-rule prior --weights-dtype bfloat16 --xray-gate weights/pneumonia-resnet50
    fi
    shortcut_scores "$BUNDLE/shortcuts" "bundle-v5 (as deployed)" --model "$BUNDLE"
    [ -f "$BUNDLE/eval-validation/metrics.json" ] || python evaluate.py --model "$BUNDLE" --data "$DATA" \
        --split validation --output-dir "$BUNDLE/eval-validation" --robustness
    [ -f "$BUNDLE/validation_thresholds.json" ] || python -m scripts.threshold_images "$BUNDLE" --data "$DATA" \
        --output "$BUNDLE/validation_thresholds.png"
}

test_split() {  # the one evaluation on the test split, for the ensemble and the bundled student
    [ -d "$RUNS/non-xray" ] || python -m modeling.non_xray "$RUNS/non-xray"
    [ -f "$ENSEMBLE/eval-test/metrics.json" ] || python evaluate.py --ensemble "${TEACHERS[@]}" --data "$DATA" \
        --split test --output-dir "$ENSEMBLE/eval-test" --robustness
    [ -f "$BUNDLE/eval/metrics.json" ] || python evaluate.py --model "$BUNDLE" --data "$DATA" --split test \
        --output-dir "$BUNDLE/eval" --ood-images "$RUNS/non-xray" --other-xrays "$FORMATS" --robustness
}

publish() {
    python -m scripts.publish_bundle --data "$DATA" --seeds "${TEACHERS[@]}" --ensemble "$ENSEMBLE" \
        --student "$STUDENT" --bundle "$BUNDLE"
}

status() {
    local run file
    for run in "${TEACHERS[@]}" "$STUDENT"; do
        if [ -f "$run/training_log.json" ]; then echo "trained      $run"
        elif [ -f "$run/checkpoints/latest.json" ]; then
            echo "epoch $(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["epoch"] + 1)' \
                "$run/checkpoints/latest.json")/$EPOCHS  $run"
        else echo "to train     $run"; fi
    done
    for file in "${TEACHERS[@]/%//shortcuts/shortcuts.json}" "$STUDENT/shortcuts/shortcuts.json" \
                "$ENSEMBLE/shortcuts/shortcuts.json" "$ENSEMBLE/eval-validation/metrics.json" "$BUNDLE/config.json" \
                "$BUNDLE/shortcuts/shortcuts.json" "$BUNDLE/eval-validation/metrics.json" \
                "$BUNDLE/validation_thresholds.json" "$ENSEMBLE/eval-test/metrics.json" "$BUNDLE/eval/metrics.json"; do
        if [ -f "$file" ]; then echo "written      $file"; else echo "to write     $file"; fi
    done
}

for stage in "${@:-seeds student scores finalize test publish}"; do
    for s in $stage; do
        case $s in
            seeds) seeds ;; student) student ;; scores) scores ;; finalize) finalize ;; test) test_split ;;
            publish) publish ;; status) status; exit 0 ;;
            *) echo "unknown stage '$s' (seeds, student, scores, finalize, test, publish, status)" >&2; exit 2 ;;
        esac
    done
done
step "stages done: ${*:-all}"
