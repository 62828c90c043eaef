#!/usr/bin/env bash
# One training window: continue the bundled network for BUDGET, finalize it, score it on validation, let the
# replacement rule decide, evaluate the test split once if the rule chose it, and publish.
#
#   bash scripts/make_bundle.sh BUDGET [STAGE ...]   BUDGET: 2h, 1h45m, 90m; STAGE: train, finalize, scores,
#                                                    decide, test, publish (default: all, in order)
#   bash scripts/make_bundle.sh BUDGET status        what is done, and where training stands
#
# The run continues weights/pneumonia-resnet50 (train.py --init-from) on its own split, with the epochs planned to
# fit BUDGET on the machine at hand (train.py --time-budget), on the thorax recipe. Each window's run is recorded in
# docs/windows/ (python -m scripts.window_record), finished or not, and shown in docs/experiments.md.
# Every stage writes its own files under $RUN and is skipped once they exist; training resumes from its last
# checkpoint, so a stopped window goes on where it stopped and still ends on time. The rule
# (scripts/publish_bundle.py, `replaces`) reads validation and the shortcut scores only; the test split is evaluated
# for a candidate the rule chose, once, and reported whatever it shows. Nothing is committed: read `git diff`, then
# commit. Set RUN (the training run), CANDIDATE (its finalized folder, $RUN-bundle), DATA or FORMATS to point elsewhere,
# and INIT to continue an earlier window's finalized candidate instead of the bundle, where its folder survived (the
# rule still compares with the bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:?usage: bash scripts/make_bundle.sh BUDGET [train|finalize|scores|decide|test|publish|status ...]}
shift
RUN=${RUN:-runs/window}
DATA=${DATA:-../shared/data/chest_xray}
FORMATS=${FORMATS:-../shared/data/formats}
BUNDLED=weights/pneumonia-resnet50
INIT=${INIT:-$BUNDLED}
CANDIDATE=${CANDIDATE:-$RUN-bundle}

step() { echo "== $(date +%H:%M) $*" >&2; }

train() {
    [ -f "$RUN/training_log.json" ] && return
    step "training $RUN from $INIT for $BUDGET"
    python train.py --data "$DATA" --output-dir "$RUN" --init-from "$INIT" --time-budget "$BUDGET" \
        --budget-sizes 176:0.5,224:0.5 --augment thorax --lr 3e-4 --warmup-epochs 0.3 --resume --no-finalize
}

finalize() {
    [ -f "$CANDIDATE/config.json" ] && return
    step "finalizing $RUN into $CANDIDATE"
    python -m scripts.finalize "$RUN" --data "$DATA" --output-dir "$CANDIDATE" --precision float32 \
        --tta none --threshold-rule prior --weights-dtype bfloat16 --xray-gate "$BUNDLED"
}

scores() {
    [ -f "$CANDIDATE/shortcuts/shortcuts.json" ] || python -m scripts.shortcut_scores --model "$CANDIDATE" \
        --data "$DATA" --output-dir "$CANDIDATE/shortcuts" --title "$(basename "$RUN") (as deployed)"
    [ -f "$CANDIDATE/eval-validation/metrics.json" ] || python evaluate.py --model "$CANDIDATE" --data "$DATA" \
        --split validation --output-dir "$CANDIDATE/eval-validation"
    [ -f "$CANDIDATE/validation_thresholds.json" ] || python -m scripts.threshold_images "$CANDIDATE" --data "$DATA" \
        --output "$CANDIDATE/validation_thresholds.png"
}

decide() {
    python -m scripts.publish_bundle decide --candidate "$CANDIDATE" --data "$DATA"
}

test_split() {  # the one evaluation on the test split, of a candidate the rule chose
    python -m scripts.publish_bundle chosen --candidate "$CANDIDATE" || { step "the rule kept $BUNDLED"; return; }
    [ -d "$RUN/non-xray" ] || python -m scripts.non_xray "$RUN/non-xray"
    [ -f "$CANDIDATE/eval/metrics.json" ] || python evaluate.py --model "$CANDIDATE" --data "$DATA" --split test \
        --output-dir "$CANDIDATE/eval" --ood-images "$RUN/non-xray" --other-xrays "$FORMATS"
}

publish() {
    python -m scripts.publish_bundle publish --candidate "$CANDIDATE" --data "$DATA"
}

status() {
    local file
    if [ -f "$RUN/training_log.json" ]; then echo "trained      $RUN"
    elif [ -f "$RUN/checkpoints/latest.json" ]; then python - "$RUN/checkpoints" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
state = json.loads((root / json.loads((root / "latest.json").read_text())["checkpoint"] / "trainer_state.json").read_text())
budget = state.get("budget") or {"spent_by_size": {}, "budget_s": 0}
print(f"epoch {state['epoch'] + 1} done, {sum(budget['spent_by_size'].values()) / 60:.0f} of "
      f"{budget['budget_s'] / 60:.0f} min spent  {root.parent}")
EOF
    else echo "to train     $RUN"; fi
    for file in "$CANDIDATE/config.json" "$CANDIDATE/shortcuts/shortcuts.json" "$CANDIDATE/eval-validation/metrics.json" \
                "$CANDIDATE/decision.json" "$CANDIDATE/eval/metrics.json"; do
        if [ -f "$file" ]; then echo "written      $file"; else echo "to write     $file"; fi
    done
}

for stage in "${@:-train finalize scores decide test publish}"; do
    for s in $stage; do
        case $s in
            train) train ;; finalize) finalize ;; scores) scores ;; decide) decide ;; test) test_split ;;
            publish) publish ;; status) status; exit 0 ;;
            *) echo "unknown stage '$s' (train, finalize, scores, decide, test, publish, status)" >&2; exit 2 ;;
        esac
    done
done
step "stages done: ${*:-all}"
