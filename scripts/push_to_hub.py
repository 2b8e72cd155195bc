"""Push a trained model folder to the Hugging Face Hub: weights, config, tokenizer, remote code, card.

    python scripts/push_to_hub.py --model out/shakespeare/model --repo-id you/gpt-shakespeare [--private]

The token comes from --token, else $HF_TOKEN, else the one `hf auth login` saved.
Set HF_ENDPOINT to push somewhere other than https://huggingface.co.
"""

from gpt_scratch.folder.hub import main

if __name__ == "__main__":
    main()
