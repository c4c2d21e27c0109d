"""Models from the Hugging Face hub: the local cache first, then a download."""

from __future__ import annotations

from pathlib import Path

from anyclaude.errors import ModelLoadError
from anyclaude.logs import get_logger

log = get_logger()


def from_hub(repo: str, model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        path = snapshot_download(repo, local_files_only=True, allow_patterns=DEFAULT_ALLOW_PATTERNS)
        log.info("engine.model.cached", model=model_id, repo=repo, path=path)
        return Path(path)
    except Exception:  # not (completely) in the local cache
        pass
    log.info("engine.model.downloading", model=model_id, repo=repo)
    advice = (f"Download it on a connected machine (`huggingface-cli download {repo}`), copy "
              f"the directory here and set models.{model_id}.path to that local directory")
    try:
        path = snapshot_download(repo, allow_patterns=DEFAULT_ALLOW_PATTERNS)
    except GatedRepoError:
        raise ModelLoadError(f"could not download {repo}: the repository is gated; accept its "
                             "license on huggingface.co and log in (`huggingface-cli login`), "
                             f"or: {advice}") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"could not download {repo}: no such model on the Hugging Face hub "
                             f"(check the spelling of models.{model_id}.path)") from None
    except Exception as exc:  # offline, DNS, proxy, timeouts: huggingface_hub wraps them variously
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelLoadError(f"could not download {repo}: no network access to the Hugging Face "
                             f"hub ({reason}). {advice}") from None
    log.info("engine.model.downloaded", model=model_id, repo=repo, path=path)
    return Path(path)
