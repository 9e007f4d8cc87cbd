"""The entropy-decoder process of :mod:`yotocodec.isolation`: a bare interpreter that loads only CompressAI's ``ans``
extension and answers decode requests until its input closes.

Run as ``python -I -S rans_server.py PATH_TO_ANS_EXTENSION``; it imports nothing of yotocodec, torch or CompressAI's
package, so it starts in tens of milliseconds and holds a few megabytes besides the strings it decodes.
Protocol on stdin/stdout: one byte ``b"R"`` when ready; then for each pickled request ``(method, args)`` — a
``RansDecoder`` method: ``decode_with_indexes`` (a fresh decoder each time), or ``set_stream`` and ``decode_stream``
(one decoder kept for the stream) — the values it returns as a pickled ``bytes`` of native int32 (empty for
``set_stream``).
"""

import importlib.util
import pickle
import signal
import sys
from array import array


def main(extension: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    spec = importlib.util.spec_from_file_location("ans", extension)
    ans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ans)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    streaming = ans.RansDecoder()
    methods = {
        "decode_with_indexes": lambda *args: ans.RansDecoder().decode_with_indexes(*args),
        "set_stream": streaming.set_stream,
        "decode_stream": streaming.decode_stream,
    }
    answers.write(b"R")
    answers.flush()
    while True:
        try:
            method, args = pickle.load(requests)
        except EOFError:
            return
        values = methods[method](*args)
        pickle.dump(array("i", values or ()).tobytes(), answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    main(sys.argv[1])
