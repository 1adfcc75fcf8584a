"""The theory lab's experiments, one function each (``run(ctx) -> list of claims``).

| key           | function                  | what it measures                                      |
|---------------|---------------------------|-------------------------------------------------------|
| `unbiased`    | bias.unbiased             | 1. exact bias vs ∇J(θ) and ∇J(θ_old), θ far from θ_old |
| `staleness`   | bias.staleness            | 2. bias vs ‖θ−θ_old‖ and ηK along real inner loops     |
| `group_size`  | groups.run                | 3. bias and MSE vs G against the G → ∞ limit           |
| `convergence` | training.convergence      | 4. J(θ_n), ‖∇J(θ_n)‖² for every method, many seeds     |
| `rate_shape`  | training.rate_shape       | 5. fit of a/(ηKN) + b·ηK + c/G                         |
| `refresh_clip`| training.refresh_clip     | 6. K sweep; clip mode × ratio level × ε                |
| `length`      | length.run                | 7. trajectory-weight ESS vs T; log space vs product    |
| `open`        | open_questions.run        | 8. dense rewards, KL penalty, baselines at small G     |
"""

from __future__ import annotations

from . import bias, groups, length, open_questions, training

EXPERIMENTS = {
    "unbiased": bias.unbiased,
    "staleness": bias.staleness,
    "group_size": groups.run,
    "convergence": training.convergence,
    "rate_shape": training.rate_shape,
    "refresh_clip": training.refresh_clip,
    "length": length.run,
    "open": open_questions.run,
}
