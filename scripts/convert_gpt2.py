"""Convert GPT-2 weights between transformers' GPT2LMHeadModel and gpt_scratch.

    python scripts/convert_gpt2.py --from-hf path/to/gpt2 --out gpt2-scratch
    python scripts/convert_gpt2.py --to-hf out/shakespeare/model --out shakespeare-hf
"""

import sys

from gpt_scratch.folder.convert import main

if __name__ == "__main__":
    sys.exit(main())
