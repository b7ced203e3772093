"""FusionFM web app (Gradio). Placeholder until the app issue lands.

The app needs the bundled default model, which is trained in a later issue. Until both exist this
script says so and exits with status 2, rather than serving an untrained network.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "The FusionFM web app is not built yet: it arrives together with the bundled default model.\n"
        "Meanwhile use the library: see 'Use from Python' in README.md.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
