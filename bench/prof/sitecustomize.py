"""Profile `hoinghi serve` over a window, for `hoinghi bench forward` runs.

    PYTHONPATH=bench/prof HOINGHI_PROF=/tmp/serve HOINGHI_PROF_WINDOW=12,22 \
        hoinghi bench forward --subscribers 50 --seconds 15
    python bench/prof/fold.py /tmp/serve.folded       # where the CPU went, by function

Only the server process (argv has `serve`) is profiled, from the window's start to its end in
seconds after start-up, two ways at once:
- `<HOINGHI_PROF>.folded`: a sampling profile of CPU time (ITIMER_PROF, 2 kHz): each sample is
  the main thread's Python stack when the signal was handled, so time in a C call (a send, SRTP)
  is charged to the Python line that made it. Little overhead: read it for how much, too.
- `<HOINGHI_PROF>.prof` with HOINGHI_PROF_CALLS=1: cProfile, on CPU time (a 2-core machine
  preempts the server inside its sends, so wall time misleads); its call counts are exact but
  it slows Python calls several times over: read it for what is called how often.
"""

import os
import signal
import sys

_out = os.environ.get("HOINGHI_PROF")
if _out and "serve" in sys.argv:
    import collections
    import time

    _start, _stop = (float(x) for x in os.environ.get("HOINGHI_PROF_WINDOW", "10,20").split(","))
    _calls = os.environ.get("HOINGHI_PROF_CALLS") == "1"
    _samples: collections.Counter[str] = collections.Counter()
    _state = {"on": False}
    _prof = None
    if _calls:
        import cProfile

        _prof = cProfile.Profile(time.thread_time)

    def _sample(_sig: int, frame: object) -> None:
        names = []
        f = frame
        while f is not None:
            code = f.f_code  # type: ignore[attr-defined]
            names.append(f"{os.path.basename(code.co_filename)}:{code.co_name}")
            f = f.f_back  # type: ignore[attr-defined]
        _samples[";".join(reversed(names))] += 1

    def _alarm(_sig: int, _frame: object) -> None:
        if not _state["on"]:
            _state["on"] = True
            if _prof is not None:
                _prof.enable()
            else:
                signal.signal(signal.SIGPROF, _sample)
                signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
            signal.setitimer(signal.ITIMER_REAL, _stop - _start)
            return
        if _prof is not None:
            _prof.disable()
            _prof.dump_stats(_out + ".prof")
        else:
            signal.setitimer(signal.ITIMER_PROF, 0)
            with open(_out + ".folded", "w") as fh:
                for stack, n in _samples.most_common():
                    fh.write(f"{stack} {n}\n")
        print(f"hoinghi-prof: wrote {_out}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, _start)
