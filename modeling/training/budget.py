"""Training to a wall-clock budget (Li, Yumer and Ramanan, "Budgeted training", ICLR 2020).

The budget is cut into time shares, one per training size (progressive resizing, smallest first). The epochs
of each size are planned from the measured seconds per step and per validation, and planned again after every
epoch from what the epochs really took, so that a slow machine, a busy one, or a run resumed on another
machine still ends on time. The learning rate warms up, then falls linearly from its peak to zero at the last
planned step: a function of the share of the planned steps done, so that when a new plan moves the last step,
the rate moves with it (an epoch that came in under its estimate leaves time that is trained at a rate above
zero, not at zero). The last epoch of a size may be shortened to fit. The time counted is that of finished epochs: an epoch lost to a stop is not
counted, and is trained again.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """"2h", "1h30m", "90m", "45s" or plain seconds ("5400") -> seconds."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or not match:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 2h, 1h30m, 90m or 5400") from None
        hours, minutes, secs = (float(part or 0) for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget must be longer than zero")
    return seconds


def parse_size_shares(text: str) -> list[tuple[int, float]]:
    """"176:0.5,224:0.5" -> [(176, 0.5), (224, 0.5)]: training sizes, smallest first, and their shares of the
    budget (normalised to add up to one)."""
    try:
        pairs = [(int(size), float(share)) for size, share in (part.split(":") for part in text.split(","))]
        if not pairs or any(size < 32 or share <= 0 for size, share in pairs):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SIZE:SHARE[,SIZE:SHARE...], e.g. 176:0.5,224:0.5") from None
    if [size for size, _ in pairs] != sorted({size for size, _ in pairs}):
        raise argparse.ArgumentTypeError(f"{text!r}: give each size once, smallest first")
    total = sum(share for _, share in pairs)
    return [(size, share / total) for size, share in pairs]


def plan_epochs(budget_s: float, shares: list[tuple[int, float]], spent_by_size: dict[int, float],
                step_seconds: dict[int, float], validation_seconds: float,
                steps_per_epoch: int) -> list[tuple[int, int]]:
    """The epochs left, as (training size, steps), that fit the budget.

    `spent_by_size` is the time finished epochs took at each size (training and validation). A size already
    trained at closes the sizes before it: their unused time passes to the sizes after. Each remaining size
    gets the time left in proportion to what its share still asks for; an epoch costs its steps times
    `step_seconds[size]` plus one validation. A remainder shorter than a quarter epoch, not worth a validation of
    its own, passes to the next size.
    """
    min_steps = max(1, steps_per_epoch // 4)
    current = max((i for i, (size, _) in enumerate(shares) if spent_by_size.get(size)), default=0)
    remaining = shares[current:]
    left = budget_s - sum(spent_by_size.values())
    if left <= 0:
        return []
    wanted = [max(0.0, share * budget_s - spent_by_size.get(size, 0.0)) for size, share in remaining]
    if sum(wanted) <= 0:  # every share is used up, but time is left (an epoch came in under its estimate)
        wanted = [0.0] * (len(remaining) - 1) + [1.0]
    plan: list[tuple[int, int]] = []
    carried = 0.0
    for (size, _), want in zip(remaining, wanted):
        available = left * want / sum(wanted) + carried
        full_epoch = steps_per_epoch * step_seconds[size] + validation_seconds
        epochs = int(available // full_epoch)
        plan += [(size, steps_per_epoch)] * epochs
        rest = available - epochs * full_epoch
        steps = int((rest - validation_seconds) // step_seconds[size])
        if steps >= min_steps:
            plan.append((size, steps))
            rest -= steps * step_seconds[size] + validation_seconds
        carried = max(0.0, rest)
    return plan


@dataclass
class BudgetState:
    """What a budgeted run carries from epoch to epoch, and in its checkpoints."""
    budget_s: float
    shares: list[tuple[int, float]]
    peak_lr: float
    warmup_steps: int
    spent_by_size: dict[int, float] = field(default_factory=dict)
    steps_done: int = 0
    total_steps: int = 0  # the last step of the current plan
    plan: list[tuple[int, int]] = field(default_factory=list)

    def replan(self, step_seconds: dict[int, float], validation_seconds: float, steps_per_epoch: int) -> None:
        """Plan the epochs left from the measured costs, and move the learning rate's end to the plan's."""
        self.plan = plan_epochs(self.budget_s, self.shares, self.spent_by_size, step_seconds, validation_seconds,
                                steps_per_epoch)
        self.total_steps = self.steps_done + sum(steps for _, steps in self.plan)

    def lr(self, step: int) -> float:
        """The learning rate at a global step: linear warm-up, then a linear fall to zero at `total_steps`."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if not self.total_steps:  # not planned yet
            return self.peak_lr
        if step >= self.total_steps:
            return 0.0
        return self.peak_lr * (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)

    def finish_epoch(self, size: int, steps: int, seconds: float) -> None:
        self.steps_done += steps
        self.spent_by_size[size] = self.spent_by_size.get(size, 0.0) + seconds

    @property
    def spent_s(self) -> float:
        return sum(self.spent_by_size.values())

    def to_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["spent_by_size"] = {str(size): seconds for size, seconds in self.spent_by_size.items()}
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "BudgetState":
        known = {f.name for f in fields(cls)}
        state = {key: value for key, value in state.items() if key in known}  # older checkpoints kept more
        state["shares"] = [tuple(pair) for pair in state["shares"]]
        state["plan"] = [tuple(pair) for pair in state["plan"]]
        state["spent_by_size"] = {int(size): seconds for size, seconds in state["spent_by_size"].items()}
        return cls(**state)
