"""Generate text from a model folder (GPT or bigram), streaming it to stdout.

    python scripts/generate.py --model out/shakespeare/model --prompt "ROMEO:" --max-new-tokens 100
    python scripts/generate.py --model out/shakespeare/model --greedy --prompt-file prompt.txt
    echo "To be, or not to be" | python scripts/generate.py --model out/shakespeare/model

`--help` lists every option; the logic lives in gpt_scratch/folder/generate.py (main(argv)).
"""

import sys

from gpt_scratch.folder.generate import main

if __name__ == "__main__":
    sys.exit(main())
