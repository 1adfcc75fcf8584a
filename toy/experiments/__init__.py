"""The theory lab's experiments, one function each (``run(ctx) -> list of claims``).

| key            | function                   | what it measures (v5)                                    |
|----------------|----------------------------|----------------------------------------------------------|
| `hierarchy_T`  | hierarchy.hierarchy_T      | 1. S vs T for GRPO, GRPO₂, TIC-GRPO (Thm 4.1–4.3)         |
| `m_sigma`      | hierarchy.m_sigma          | 2. S as M_n and σ² are dialled (Thm 4.1 vs 4.2–4.3)       |
| `group_term`   | hierarchy.group_term       | 3. group-mean error vs G and T (T²/G vs T/G)              |
| `mechanisms`   | mechanisms.run             | 4. Property 4.1; TIC's second-moment bound; GRPO₂'s       |
| `decomposition`| decomposition.run          | 5. Eq. 7, 9, A.3 term by term; where GRPO's update sits   |
| `practice`     | practice.run               | 6. Table 2 / Fig. 1 in miniature, η swept, held-out seeds |
| `unbiased`     | bias.unbiased              | leading terms: exact bias vs ∇J(θ), ∇J(θ_old)             |
| `staleness`    | bias.staleness             | staleness bias along real inner loops, local slopes       |
| `group_size`   | groups.run                 | bias vs the G → ∞ limit; Monte Carlo variance of a batch  |
| `length`       | length.run                 | trajectory-weight ESS vs T; how often log-ratios are capped |
"""

from __future__ import annotations

from . import bias, decomposition, groups, hierarchy, length, mechanisms, practice

EXPERIMENTS = {
    "hierarchy_T": hierarchy.hierarchy_T,
    "m_sigma": hierarchy.m_sigma,
    "group_term": hierarchy.group_term,
    "mechanisms": mechanisms.run,
    "decomposition": decomposition.run,
    "practice": practice.run,
    "unbiased": bias.unbiased,
    "staleness": bias.staleness,
    "group_size": groups.run,
    "length": length.run,
}
