"""Imported by the fork server only (first in ``bulkhead.PRELOAD``, the one hook
multiprocessing gives into that process): titles it ``otgate: forkserver``.
Bulkheads forked from it set their own title at once."""

from otgate.supervisors.titles import set_title

set_title("forkserver")
