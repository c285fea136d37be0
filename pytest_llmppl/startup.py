"""Start-up checks that need more than parsing: does the corpus exist, does the device.

Run once in ``pytest_configure``, so a typo is a usage error before any model loads.
Nothing heavy is imported unless the setting asks for it (a CUDA device needs torch).
"""

from __future__ import annotations

import os

from .errors import CorpusError, SettingsError
from .settings import Settings


def check_settings(settings: Settings, worker_id: str | None, where: dict[str, str] | None = None) -> str | None:
    """Raise SettingsError for settings that cannot work here, naming where each came from
    (``where``: ``settings.origins``); return what ``auto`` resolved to."""
    from .measure.corpus import check_spec
    from .settings import option_flag

    def origin(name: str) -> str:
        return (where or {}).get(name, option_flag(name))

    if settings.update_baselines and settings.strict:
        raise SettingsError(
            f"{origin('strict')} and {origin('update_baselines')} are both set: a strict run reads the committed "
            "file and never writes it, a refresh writes it; run the refresh on its own (an environment variable or "
            "ini key left over turns a strict CI run into a recording one)")
    if settings.update_baselines and not settings.baselines:
        raise SettingsError("--ppl-update-baselines needs --ppl-baselines=FILE to write to")
    if settings.file_changes and not settings.update_baselines:
        raise SettingsError(f"{origin('file_changes')} goes with --ppl-update-baselines: it is where a refresh run "
                            "writes its changes to the committed file")
    if settings.strict and not settings.baselines:
        raise SettingsError("--ppl-strict needs --ppl-baselines=FILE to read committed baselines from")
    try:
        check_spec(settings.corpus)
    except CorpusError as exc:
        raise SettingsError(f"{origin('corpus')}: {exc}") from None
    if settings.device == "auto":
        return auto_device(worker_id)
    if settings.device is not None:
        check_device(settings.device, origin("device"))
    return None


def auto_device(worker_id: str | None, pin: bool = True) -> str:
    """What ``auto`` means here; at start-up (``pin``) this process is also pinned to its GPU
    (one per xdist worker) before CUDA is initialised.  A torch built without CUDA is the CPU,
    whatever ``CUDA_VISIBLE_DEVICES`` a GPU runner's environment sets."""
    from .measure.devices import pick_device, visible_gpus

    device, pinned = pick_device(worker_id, visible_gpus())
    if pin and pinned is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = pinned
    if device != "cpu":
        import torch

        if torch.version.cuda is None and torch.version.hip is None:
            return "cpu"
    return device


def check_device(device: str, origin: str = "--ppl-device") -> None:
    """A CUDA or MPS device must exist in this torch build and machine (``origin``: where it was set)."""
    kind, _, index = device.partition(":")
    if kind not in ("cuda", "mps"):
        return
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise SettingsError(f"{origin}={device}: MPS is not available here; use --ppl-device=cpu or auto")
        return
    if not torch.cuda.is_available():
        cuda = torch.version.cuda
        build = "a CPU-only build" if cuda is None else f"CUDA {cuda}, but no GPU is visible"
        raise SettingsError(
            f"{origin}={device}: this torch ({torch.__version__}) has {build}; use --ppl-device=auto "
            "(the GPU when there is one, else the CPU) or --ppl-device=cpu"
        )
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise SettingsError(f"{origin}={device}: only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
