"""modeling/training/budget.py: the schedule of a budgeted run as a function of the measured throughput and the time spent."""
import argparse

import pytest

from modeling.training.budget import BudgetState, parse_duration, parse_size_shares, plan_epochs

SHARES = [(176, 0.5), (224, 0.5)]
STEP_SECONDS = {176: 5.0, 224: 9.0}  # an AVX2 CPU in fp32, batch 32
VALIDATION_SECONDS = 60.0
STEPS = 139  # 4470 images, 32 a step


def cost(plan, step_seconds=STEP_SECONDS, validation_seconds=VALIDATION_SECONDS):
    return sum(steps * step_seconds[size] + validation_seconds for size, steps in plan)


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("1h30m", 5400), ("90m", 5400), ("45s", 45), ("5400", 5400),
                                           ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 hours", "h", "-1", "0m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_size_shares_are_normalised_and_ordered():
    assert parse_size_shares("176:1,224:3") == [(176, 0.25), (224, 0.75)]
    for bad in ("224:1,176:1", "176:1,176:1", "176", "176:0", "16:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size_shares(bad)


@pytest.mark.parametrize("budget", [1800, 5400, 7200, 9000])
def test_the_plan_fits_the_budget_and_leaves_less_than_a_short_epoch_unused(budget):
    plan = plan_epochs(budget, SHARES, {}, STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    assert cost(plan) <= budget
    assert budget - cost(plan) < STEPS // 4 * STEP_SECONDS[224] + VALIDATION_SECONDS + STEPS * STEP_SECONDS[224] / 4
    assert [size for size, _ in plan] == sorted(size for size, _ in plan), "smallest size first"
    assert all(0 < steps <= STEPS for _, steps in plan)


def test_each_size_gets_its_share_of_the_time():
    plan = plan_epochs(7200, SHARES, {}, STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    at = {size: cost([epoch for epoch in plan if epoch[0] == size]) for size, _ in SHARES}
    assert at[176] == pytest.approx(3600, abs=STEPS * STEP_SECONDS[176] / 4 + VALIDATION_SECONDS)
    assert at[176] + at[224] <= 7200


def test_a_slower_machine_plans_fewer_steps_in_the_same_time():
    fast = plan_epochs(7200, SHARES, {}, STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    slow = plan_epochs(7200, SHARES, {}, {size: 3 * s for size, s in STEP_SECONDS.items()}, VALIDATION_SECONDS, STEPS)
    assert sum(n for _, n in slow) < sum(n for _, n in fast) / 2
    assert cost(slow, {size: 3 * s for size, s in STEP_SECONDS.items()}) <= 7200


def test_time_spent_is_taken_off_and_a_size_trained_at_closes_the_ones_before():
    spent = {176: 3000.0, 224: 1000.0}
    plan = plan_epochs(7200, SHARES, spent, STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    assert {size for size, _ in plan} == {224}
    assert cost(plan) <= 7200 - 4000
    assert plan_epochs(7200, SHARES, {176: 7300.0}, STEP_SECONDS, VALIDATION_SECONDS, STEPS) == []


def test_time_left_over_when_every_share_is_used_goes_to_the_last_size():
    plan = plan_epochs(7200, SHARES, {176: 3600.0, 224: 2000.0}, STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    assert {size for size, _ in plan} == {224} and cost(plan) <= 1600


def test_the_learning_rate_warms_up_then_falls_linearly_to_zero_at_the_plans_end():
    state = BudgetState(7200, SHARES, peak_lr=3e-4, warmup_steps=40)
    state.replan(STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    end = state.total_steps
    assert end == sum(steps for _, steps in state.plan)
    assert state.lr(0) == pytest.approx(3e-4 / 40)
    assert state.lr(40) == pytest.approx(3e-4)
    middle = (40 + end) // 2
    assert state.lr(middle) == pytest.approx(3e-4 * (end - middle) / (end - 40))
    assert state.lr(end) == 0.0 and state.lr(end - 1) > 0


def test_a_new_plan_moves_the_end_of_the_fall_and_the_rate_with_it():
    state = BudgetState(7200, SHARES, peak_lr=3e-4, warmup_steps=40)
    state.replan(STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    first_size, first_steps = state.plan[0]
    state.finish_epoch(first_size, first_steps, 2 * cost([state.plan[0]]))  # the epoch took twice its estimate
    old_end = state.total_steps
    state.replan({size: 2 * s for size, s in STEP_SECONDS.items()}, 2 * VALIDATION_SECONDS, STEPS)
    assert state.total_steps < old_end, "a slower machine: the end comes sooner"
    assert state.lr(state.steps_done) == pytest.approx(3e-4 * (state.total_steps - state.steps_done)
                                                       / (state.total_steps - 40))
    assert state.lr(state.total_steps) == 0.0


def test_time_left_after_the_plans_end_is_trained_at_a_rate_above_zero():
    state = BudgetState(3600, [(224, 1.0)], peak_lr=3e-4, warmup_steps=40)
    state.replan(STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    for size, steps in list(state.plan):  # every epoch comes in at half its estimate
        state.finish_epoch(size, steps, cost([(size, steps)]) / 2)
    assert state.lr(state.steps_done) == 0.0, "the first plan has ended"
    state.replan({size: s / 2 for size, s in STEP_SECONDS.items()}, VALIDATION_SECONDS / 2, STEPS)
    assert state.plan, "half the budget is left"
    assert state.lr(state.steps_done) > 0 and state.lr(state.total_steps) == 0.0


def test_the_state_survives_a_checkpoint_as_json():
    state = BudgetState(5400, SHARES, peak_lr=3e-4, warmup_steps=40)
    state.replan(STEP_SECONDS, VALIDATION_SECONDS, STEPS)
    state.finish_epoch(176, STEPS, 800.0)
    import json
    again = BudgetState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert again.spent_s == 800.0
