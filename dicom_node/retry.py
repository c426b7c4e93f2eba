"""One retry policy for jobs, deliveries and webhook notifications.

The job queue (:func:`dicom_node.jobs.queue.mark_failed`), the exporter
(:func:`dicom_node.export.exporter.deliver_due`) and the notifications
(:func:`dicom_node.notifications.send_due_notifications`) each persist the
attempts made and the time of the next one; this module only says how long
to wait and when to give up. Each use is configured in its own settings
section (``workers.*``, ``export.destinations[].*``,
``notifications.webhooks[].*``), which builds a :class:`RetryPolicy`.

References
----------
rq ``Retry`` (``rq/retry.py``); AWS Architecture Blog, "Exponential Backoff
And Jitter" (2015), the "equal jitter" variant.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, and a limit on attempts.

    After ``attempt`` failed attempts (``attempt >= 1``) the next one waits

    .. math::

        c_n = \\min(\\mathrm{cap\\_s},\\ \\mathrm{base\\_s} \\cdot \\mathrm{factor}^{n-1}),
        \\qquad d_n = c_n \\cdot (1 - \\mathrm{jitter} \\cdot u),\\ u \\sim U[0, 1)

    seconds, so ``d_n`` lies in ``((1 - jitter) * c_n, c_n]``. ``jitter = 0``
    gives the plain sequence ``base_s, base_s * factor, ...``; ``jitter = 0.5``
    is "equal jitter" (half fixed, half random), which spreads the retries of
    many rows failing at the same moment (a PACS outage) without ever
    retrying sooner than half the nominal delay.

    Parameters
    ----------
    base_s : float
        Delay after the first failed attempt before jitter, in seconds (>= 0).
    factor : float
        Growth per further attempt (>= 1; 2 doubles the delay).
    cap_s : float
        Largest delay before jitter, in seconds (>= 0; ``math.inf`` for no cap).
    jitter : float
        Fraction of the delay that is random, in [0, 1].
    max_attempts : int
        Attempts in all, the first included (>= 1); after that many the row
        is given up (job FAILED, delivery DEAD, notification FAILED).

    Raises
    ------
    ValueError
        If a parameter is outside the range given above.

    Examples
    --------
    >>> p = RetryPolicy(base_s=5, cap_s=600, jitter=0, max_attempts=10)
    >>> [p.delay(n) for n in (1, 2, 3, 8, 9)]
    [5.0, 10.0, 20.0, 600.0, 600.0]
    >>> p.exhausted(9), p.exhausted(10)
    (False, True)
    """

    base_s: float
    factor: float = 2.0
    cap_s: float = math.inf
    jitter: float = 0.5
    max_attempts: int = 3

    def __post_init__(self) -> None:
        """Check the ranges (see the class docstring); raise ValueError otherwise."""
        if not self.base_s >= 0:
            raise ValueError(f"base_s must be >= 0 s, got {self.base_s}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not self.cap_s >= 0:
            raise ValueError(f"cap_s must be >= 0 s, got {self.cap_s}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def ceiling_s(self, attempt: int) -> float:
        """The delay after ``attempt`` failed attempts before jitter, in seconds.

        Parameters
        ----------
        attempt : int
            Attempts made so far (>= 1).

        Returns
        -------
        float
            ``min(cap_s, base_s * factor ** (attempt - 1))``.

        Raises
        ------
        ValueError
            If ``attempt < 1``.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts the attempts made and starts at 1, got {attempt}")
        try:
            raw = self.base_s * self.factor ** (attempt - 1)
        except OverflowError:  # factor ** n beyond float range: the cap applies
            raw = math.inf
        return min(self.cap_s, raw)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempt`` failed attempts before the next one.

        Parameters
        ----------
        attempt : int
            Attempts made so far (>= 1).
        rng : random.Random or None
            Source of the jitter (a seeded one in tests); a fresh one when None.

        Returns
        -------
        float
            In ``((1 - jitter) * c, c]`` with ``c = ceiling_s(attempt)``;
            exactly ``c`` when ``jitter`` is 0.

        Raises
        ------
        ValueError
            If ``attempt < 1``.
        """
        ceiling = self.ceiling_s(attempt)
        if self.jitter == 0 or ceiling == 0:
            return float(ceiling)
        rng = rng or random.Random()
        return ceiling * (1.0 - self.jitter * rng.random())

    def next_attempt_at(
        self, now: datetime, attempt: int, rng: random.Random | None = None
    ) -> datetime:
        """When the next attempt is due: ``now + delay(attempt)``.

        Parameters
        ----------
        now : datetime
            Time of the failed attempt (timezone-aware UTC).
        attempt : int
            Attempts made so far (>= 1).
        rng : random.Random or None
            See :meth:`delay`.

        Returns
        -------
        datetime
            Timezone-aware, in the zone of ``now``.

        Raises
        ------
        ValueError
            If ``attempt < 1`` or ``now`` is naive.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        return now + timedelta(seconds=self.delay(attempt, rng))

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` attempts used up the policy (no further attempt).

        Parameters
        ----------
        attempt : int
            Attempts made so far.

        Returns
        -------
        bool
            ``attempt >= max_attempts``.
        """
        return attempt >= self.max_attempts
