"""`hf://org/name[@revision]`: a Hugging Face Hub repository, through `huggingface_hub` and its cache.

`huggingface_hub.snapshot_download` keeps its cache layout (`models--org--name/{refs,snapshots,blobs}`) under
`HF_HUB_CACHE` (default `~/.cache/huggingface/hub`) and, with `HF_HUB_OFFLINE=1`, answers from that cache alone.
Only the files tfm reads are fetched (no PyTorch / TF / ONNX weights).
"""

from tfm.errors import InputError

SCHEME = "hf://"
ALLOW_PATTERNS = ["*.json", "*.safetensors", "vocab.txt", "vocab.json", "merges.txt", "*/config.json"]


def parse(name):
    """`("org/name", revision or None)` of an `hf://org/name[@revision]` string."""
    repo = name[len(SCHEME):] if name.startswith(SCHEME) else name
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise InputError(f"{name!r}: expected hf://ORGANIZATION/NAME (optionally @REVISION)")
    return repo, revision or None


def snapshot(name):
    """The local snapshot directory of `hf://org/name`, downloaded into (or, offline, read from) the hub cache.

    Raises:
        InputError: not in the cache while offline, the repository does not exist, or no network; one line.
    """
    repo, revision = parse(name)
    try:
        import huggingface_hub
    except ImportError:
        raise InputError(f"{name}: loading from the Hugging Face Hub needs `pip install huggingface_hub`") from None
    try:
        return huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=ALLOW_PATTERNS)
    except Exception as error:  # the hub client raises many types (offline, 404, HTTP, ...): report one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise InputError(f"{name}: could not get {repo} from the Hugging Face Hub or its cache "
                         f"({type(error).__name__}: {first}); offline (HF_HUB_OFFLINE=1) only cached "
                         f"repositories load") from None
