"""Where demucs weights live, whether they are here, and loading or fetching them.

A model is looked for, in order, in:

1. the path given as the model (``--model /path``): a demucs repo folder, a bag ``.yaml`` in one, or one ``.th``;
2. ``<models-dir>/<name>/``: a demucs repo folder holding ``<name>.yaml`` (a bag listing signatures) and a
   ``<sig>.th`` or ``<sig>-<sha256 prefix>.th`` per signature, as ``demucs -n <name> --repo <folder>`` reads it;
3. the Hugging Face cache, where demucs 4.1 downloads to (``adefossez/HTDemucs``: ``htdemucs.yaml`` and one
   ``<sig>.safetensors`` per signature);
4. the torch hub cache, where older demucs versions download to (``<torch home>/hub/checkpoints/<sig>-<hash>.th``,
   the names listed in demucs's ``remote/files.txt``, the bags in ``remote/<name>.yaml``).

Finding is cheap file checks and never imports torch (:func:`locate`); :func:`load` and :func:`pull` import
torch and demucs when called.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.engines.base import model_is_path
from bridge.errors import EngineUnavailable, InvalidArgument, ModelNotFound

HF_NAMESPACE = "adefossez"
INSTALL_HINT = "pip install 'stembridge[models]'"


@dataclass(frozen=True)
class Bag:
    """A demucs bag of models: the signatures it averages, per-source weights and a segment override."""

    models: tuple[str, ...]
    weights: list[list[float]] | None = None
    segment: float | None = None


@dataclass(frozen=True)
class Located:
    """Weights found on this machine.

    Attributes:
        name: the model's name (a bag name such as ``htdemucs``, or a signature).
        kind: ``repo`` (a demucs repo folder), ``file`` (one ``.th``), ``hf`` (Hugging Face cache) or ``hub``
            (torch hub cache).
        path: the folder the weights are in (the file itself for ``file``).
        files: for ``hf`` and ``hub``: the weight files in bag order.
        bag: for ``hf`` and ``hub``: the bag they form.
    """

    name: str
    kind: str
    path: Path
    files: tuple[Path, ...] = ()
    bag: Bag | None = None


@dataclass
class Search:
    """The outcome of :func:`locate`: what was found, and each place looked at with why it did not hold it."""

    name: str
    found: Located | None = None
    looked: list[str] = field(default_factory=list)
    is_path: bool = False

    def reason(self) -> str:
        """Why the model cannot run here: every place looked and the command that fetches it."""
        places = "; ".join(self.looked) or "nowhere (no models folder and no caches)"
        if self.is_path:
            return f"weights not found: {places}; give a demucs repo folder, a bag .yaml or a .th file"
        return f"weights not found in: {places}; fetch them with: stembridge models pull {self.name}"


# --- places ---------------------------------------------------------------------------------------------------


def _cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint folder, as ``torch.hub.get_dir()`` computes it (without importing torch)."""
    torch_home = os.environ.get("TORCH_HOME")
    base = Path(torch_home).expanduser() if torch_home else _cache_home() / "torch"
    return base / "hub" / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as ``huggingface_hub`` computes it from the environment."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    hf_home = os.environ.get("HF_HOME")
    return (Path(hf_home).expanduser() if hf_home else _cache_home() / "huggingface") / "hub"


def hf_repo_id(name: str) -> str:
    """The Hugging Face repository demucs 4.1 downloads ``name`` from (as ``demucs.hf.hf_repo_name``)."""
    if name == "htdemucs":
        repo = "HTDemucs"
    elif name.startswith("htdemucs_"):
        repo = "HTDemucs-" + name[len("htdemucs_") :]
    else:
        repo = "Demucs-" + name
    return f"{HF_NAMESPACE}/{repo}"


def _demucs_remote() -> Path | None:
    """demucs's ``remote`` folder (bag yamls and ``files.txt``), found without importing demucs."""
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    remote = Path(next(iter(spec.submodule_search_locations))) / "remote"
    return remote if remote.is_dir() else None


def remote_files() -> dict[str, str]:
    """``{signature: file name}`` of demucs's pretrained checkpoints, from its ``remote/files.txt``."""
    remote = _demucs_remote()
    if remote is None or not (remote / "files.txt").is_file():
        return {}
    files = {}
    for line in (remote / "files.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("root:"):
            files[line.split("-", 1)[0]] = line
    return files


def known_names() -> list[str]:
    """The pretrained bags demucs can fetch (``htdemucs``, ``htdemucs_6s``, ``mdx_extra``...)."""
    remote = _demucs_remote()
    return sorted(p.stem for p in remote.glob("*.yaml")) if remote is not None else []


def read_bag(path: Path) -> Bag:
    """Parse a demucs bag ``.yaml`` (``models: [sig, ...]``, optional ``weights`` and ``segment``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        models = tuple(str(sig) for sig in data["models"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelNotFound(
            f"{path} is not a demucs bag file ({exc}); it should hold 'models: [<signature>, ...]'"
        ) from exc
    segment = data.get("segment")
    return Bag(models, data.get("weights"), None if segment is None else float(segment))


def _signatures(folder: Path) -> dict[str, Path]:
    """``{signature: .th file}`` in a repo folder, read as demucs's ``LocalRepo`` reads it."""
    found = {}
    for file in sorted(folder.iterdir()):
        if file.suffix == ".th":
            found[file.stem.rsplit("-", 1)[0] if "-" in file.stem else file.stem] = file
    return found


def is_path(model: str) -> bool:
    """Whether ``model`` names a file or folder (``./htdemucs.th``, ``~/m/``) rather than a model name."""
    return model_is_path(model)


# --- finding --------------------------------------------------------------------------------------------------


def _in_repo(folder: Path, name: str, search: Search) -> bool:
    """Look for ``name`` (bag or signature) in a demucs repo folder; note why not in ``search``."""
    where = f"{folder}{os.sep}"
    if not folder.is_dir():
        search.looked.append(f"{where} (no such folder)")
        return False
    sigs = _signatures(folder)
    if name in sigs:
        search.found = Located(name, "repo", folder)
        return True
    bag_file = folder / f"{name}.yaml"
    if not bag_file.is_file():
        search.looked.append(f"{where} (no {name}.yaml there)")
        return False
    try:
        missing = [sig for sig in read_bag(bag_file).models if sig not in sigs]
    except ModelNotFound as exc:
        search.looked.append(f"{where} ({exc})")
        return False
    if missing:
        search.looked.append(
            f"{where} ({name}.yaml lists {', '.join(missing)} but no such .th file is there)"
        )
        return False
    search.found = Located(name, "repo", folder)
    return True


def _at_path(path: Path, search: Search) -> None:
    if path.is_file() and path.suffix == ".th":
        search.name = path.stem.rsplit("-", 1)[0] if "-" in path.stem else path.stem
        search.found = Located(search.name, "file", path)
    elif path.is_file() and path.suffix == ".yaml":
        search.name = path.stem
        _in_repo(path.parent, path.stem, search)
    elif path.is_dir():
        bags = sorted(path.glob("*.yaml"))
        sigs = _signatures(path)
        search.name = path.name
        if not (path / f"{path.name}.yaml").is_file() and path.name not in sigs:
            if len(bags) == 1:
                search.name = bags[0].stem
            elif not bags and len(sigs) == 1:
                search.name = next(iter(sigs))
        _in_repo(path, search.name, search)
    else:
        search.looked.append(f"{path} (does not exist)")


def _in_hf_cache(name: str, search: Search) -> bool:
    cache = hf_cache_dir()
    repo_id = hf_repo_id(name)
    where = f"the Hugging Face cache {cache} ({repo_id}"
    if importlib.util.find_spec("huggingface_hub") is None:
        search.looked.append(f"{where}: huggingface_hub is not installed)")
        return False
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> Path | None:
        try:
            hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        except ValueError:  # not a valid repository id or file name
            return None
        return Path(hit) if isinstance(hit, str) else None

    bag_file = cached(f"{name}.yaml")
    if bag_file is None:
        search.looked.append(f"{where}: no {name}.yaml)")
        return False
    try:
        bag = read_bag(bag_file)
    except ModelNotFound as exc:
        search.looked.append(f"{where}: {exc})")
        return False
    files = [cached(f"{sig}.safetensors") for sig in bag.models]
    missing = [f"{sig}.safetensors" for sig, f in zip(bag.models, files, strict=True) if f is None]
    if missing:
        search.looked.append(f"{where}: {', '.join(missing)} missing)")
        return False
    found = tuple(f for f in files if f is not None)
    search.found = Located(name, "hf", bag_file.parent, found, bag)
    return True


def _in_hub_cache(name: str, search: Search) -> bool:
    folder = hub_checkpoints_dir()
    remote = _demucs_remote()
    files = remote_files()
    if name in files:
        bag = Bag((name,))
    elif remote is not None and (remote / f"{name}.yaml").is_file():
        bag = read_bag(remote / f"{name}.yaml")
    else:
        search.looked.append(f"the torch hub cache {folder} (demucs has no pretrained model named {name!r})")
        return False
    wanted = [folder / files.get(sig, f"{sig}.th") for sig in bag.models]
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        search.looked.append(f"the torch hub cache {folder} ({', '.join(missing)} missing)")
        return False
    search.found = Located(name, "hub", folder, tuple(wanted), bag)
    return True


def locate(model: str, models_dir: Path | None) -> Search:
    """Find the weights of ``model`` (a name or a path) with file checks only; see the module doc for the order."""
    search = Search(model)
    if is_path(model):
        search.is_path = True
        _at_path(Path(model).expanduser(), search)
        return search
    if models_dir is not None and _in_repo(Path(models_dir).expanduser() / model, model, search):
        return search
    if not _in_hf_cache(model, search):
        _in_hub_cache(model, search)
    return search


def model_status(model: str, models_dir: Path | None) -> str | None:
    """``None`` when ``model``'s weights are here, else every place looked and the fetch command."""
    search = locate(model, models_dir)
    return None if search.found is not None else search.reason()


# --- loading (imports torch and demucs) -------------------------------------------------------------------------


def _bag_of(models: list[Any], bag: Bag | None) -> Any:
    from demucs.apply import BagOfModels

    return BagOfModels(models) if bag is None else BagOfModels(models, bag.weights, bag.segment)


def _load_found(found: Located) -> Any:
    if found.kind == "repo":
        from demucs.pretrained import get_model

        return get_model(found.name, repo=found.path)
    if found.kind == "file":
        from demucs.states import load_model

        return load_model(found.path)  # type: ignore[no-untyped-call]
    if found.kind == "hf":
        from demucs.hf import load_safetensors_model

        return _bag_of([load_safetensors_model(f) for f in found.files], found.bag)
    from demucs.repo import check_checksum
    from demucs.states import load_model

    models = []
    for file in found.files:
        if "-" in file.stem:
            check_checksum(file, file.stem.rsplit("-", 1)[1])
        models.append(load_model(file))  # type: ignore[no-untyped-call]
    return _bag_of(models, found.bag)


def load(model: str, models_dir: Path | None, allow_download: bool = False) -> tuple[Any, str]:
    """Load ``model`` in eval mode on the CPU; return it (a demucs model or bag) and its name.

    Raises:
        ModelNotFound: the weights are in none of the places (the message names them and the fetch command),
            or they are there but cannot be loaded.
    """
    search = locate(model, models_dir)
    if search.found is None and not (allow_download and not search.is_path):
        hint = "" if search.is_path else " (or allow downloads: --allow-download)"
        raise ModelNotFound(f"demucs model {model!r}: {search.reason()}{hint}")
    where = "the network" if search.found is None else str(search.found.path)
    try:
        if search.found is None:
            net = _download(model)
        else:
            net = _load_found(search.found)
    except ModelNotFound:
        raise
    except (Exception, SystemExit) as exc:  # demucs calls sys.exit() for a missing diffq or a bad repo folder
        raise ModelNotFound(
            f"could not load demucs model {model!r} from {where} ({type(exc).__name__}: {exc}); the files may be "
            f"damaged or need another demucs version: fetch them again with: stembridge models pull {search.name}"
        ) from exc
    net.eval()
    return net, search.name


def _download(name: str) -> Any:
    from demucs.pretrained import get_model

    if name not in known_names() and name not in remote_files():
        raise ModelNotFound(
            f"demucs has no pretrained model named {name!r}; choose one of: {', '.join(known_names())}"
        )
    try:
        return get_model(name)
    except (Exception, SystemExit) as exc:
        raise ModelNotFound(
            f"could not download demucs model {name!r} ({type(exc).__name__}: {exc}); check the network "
            f"connection, or copy {name}.yaml and its .th files into <models-dir>/{name}/"
        ) from exc


def pull(name: str, models_dir: Path | None = None) -> Path:
    """Fetch ``name`` into demucs's standard cache (nothing to do if it is already here); return where it is.

    This is ``stembridge models pull NAME`` for demucs models. It uses the network (demucs 4.1 downloads from
    the Hugging Face hub, older checkpoints from the torch hub).

    Raises:
        InvalidArgument: ``name`` is a path, not a model name.
        EngineUnavailable: demucs is not installed.
        ModelNotFound: not a demucs model, or the download failed (offline...).
    """
    if is_path(name):
        raise InvalidArgument(f"models pull takes a model name such as htdemucs, got the path {name!r}")
    search = locate(name, models_dir)
    if search.found is not None:
        return search.found.path
    if importlib.util.find_spec("demucs") is None or importlib.util.find_spec("torch") is None:
        raise EngineUnavailable(f"demucs is not installed; install it with: {INSTALL_HINT}")
    _download(name)
    search = locate(name, models_dir)
    return search.found.path if search.found is not None else hub_checkpoints_dir()
