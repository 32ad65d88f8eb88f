"""Running charforge's distilabel pipelines, locally or on Ray (docs/design.md §6, scale-out).

Every generation stage builds its steps inside ``charforge_pipeline(...)`` and runs it with
``run_pipeline``; ``generation.pipeline: ray`` in params.yaml moves the same DAG onto a Ray cluster
(``generation.ray_address``, or a local Ray instance when unset) without touching the stage's code.

Input columns / Output columns: those of the steps the stage adds.

Runtime parameters: ``generation.pipeline``, ``generation.ray_address``, ``generation.batch_size``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.generators.llm import cache_dir, neutralise_distilabel_network
from charforge.offline import OFFLINE_DEFAULTS, apply_offline_env
from charforge.schemas.params import GenerationConfig

if TYPE_CHECKING:
    from distilabel.distiset import Distiset
    from distilabel.pipeline import Pipeline
    from distilabel.pipeline.ray import RayPipeline


def charforge_pipeline(name: str, description: str | None = None, cache: Path | None = None) -> Pipeline:
    """A distilabel Pipeline whose step cache lives in the project cache (resumable, offline)."""
    apply_offline_env()
    neutralise_distilabel_network()
    root = (cache or cache_dir()) / "distilabel"
    from distilabel.pipeline import Pipeline

    return Pipeline(name=name, description=description, cache_dir=root)


# The object store of a private local Ray instance. Batches of text are small, and Ray spills to disk
# beyond it; Ray's default (30% of RAM, in /dev/shm) would reserve gigabytes for nothing.
LOCAL_OBJECT_STORE_BYTES = 384 * 1024**2


def _local_cpus() -> int:
    """The CPUs this process may use (the affinity mask, not the host's count, inside containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def ray_init_kwargs(config: GenerationConfig) -> dict[str, Any]:
    """What ``ray.init`` gets: a private, offline local instance, or a connection to ``ray_address``."""
    # Ray reports usage statistics unless told not to (docs/design.md §7): set before ray.init starts
    # anything.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if config.ray_address is None:
        # address="local": never attach to a cluster that RAY_ADDRESS or /tmp/ray happens to point at.
        init.update(address="local", num_cpus=_local_cpus(), object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        # Workers on a cluster do not inherit this process's environment: carry the offline defaults.
        names = (*OFFLINE_DEFAULTS, "RAY_USAGE_STATS_ENABLED")
        env = {name: os.environ[name] for name in names if name in os.environ}
        init.update(address=config.ray_address, runtime_env={"env_vars": env})
    return init


def for_config(pipeline: Pipeline, config: GenerationConfig) -> Pipeline | RayPipeline:
    """The same DAG on the runner params ask for (``run_pipeline`` also shuts down the Ray it started)."""
    if config.pipeline == "local":
        return pipeline
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "generation.pipeline: ray needs the `ray` package (pip install 'charforge[ray]')"
        ) from None
    # The address goes in ray_init_kwargs, not ray_head_node_url: with the latter distilabel passes its
    # own runtime_env={"pip": requirements} (a pip install on every node, i.e. the network, whenever a
    # step declares requirements), which would also clash with the runtime_env set here.
    return pipeline.ray(ray_head_node_url=None, ray_init_kwargs=ray_init_kwargs(config))


def run_pipeline(pipeline: Pipeline, config: GenerationConfig, use_cache: bool = True) -> Distiset:
    """Run on the configured runner; returns distilabel's Distiset.

    On Ray, a Ray that was not initialised before is shut down afterwards (the local instance's
    processes end; a cluster is only disconnected from). A Ray the caller initialised is left alone.

    A run that was killed (SIGKILL, a lost machine) leaves a cache distilabel cannot resume from: its
    batch manager was never saved, and resuming waits forever for the batch in flight at the kill
    (measured: a hang, not an error), and its own files may be cut mid-write. Every run therefore
    leaves a marker in its cache folder until it returns; a run that finds the marker deletes that
    cache and starts again, with a warning. (A run that raised keeps its marker too: its cache is not
    trusted either.)
    """
    # No runtime parameters are passed to distilabel: they would change the cache folder's name after
    # the marker's place was worked out here (the steps are configured when they are built instead).
    execution = Path(pipeline._cache_location["pipeline"]).parent
    unfinished = execution / "charforge-unfinished"
    if unfinished.exists():
        warnings.warn(
            f"pipeline {pipeline.name}: its last run was killed or failed before it finished, and "
            "distilabel cannot resume from that cache; generating again without it",
            stacklevel=2,
        )
        # All of it goes. distilabel rereads pipeline.yaml even with use_cache=False, and the kill may
        # have cut it mid-write (seen in CI: an empty file, a TypeError). A step batch cut mid-write in
        # steps_data would never be rewritten (distilabel skips files that exist) and a later cached
        # run would read it; steps_data holds only this pipeline name's cache.
        shutil.rmtree(execution)
        shutil.rmtree(Path(pipeline._cache_location["steps_data"]), ignore_errors=True)
        use_cache = False
    unfinished.parent.mkdir(parents=True, exist_ok=True)
    unfinished.touch()
    runner = for_config(pipeline, config)
    if runner is pipeline:
        distiset = runner.run(use_cache=use_cache)
    else:
        import ray

        started_here = not ray.is_initialized()
        try:
            distiset = runner.run(use_cache=use_cache)
        finally:
            if started_here and ray.is_initialized():
                ray.shutdown()
    unfinished.unlink()
    return distiset


class IncompletePipelineOutput(RuntimeError):
    """The pipeline returned fewer rows than it was given, even when rerun without its cache."""


def run_for_rows(
    pipeline: Pipeline,
    config: GenerationConfig,
    key: Callable[[dict[str, Any]], Hashable],
    expected: Sequence[Hashable],
) -> dict[Hashable, dict[str, Any]]:
    """Run ``pipeline`` and return its output rows by ``key``, every ``expected`` key present.

    distilabel resumes an interrupted run from its step cache, and a resumed run can lose a batch
    (seen: a cached loader whose last batch never reached the generation step). A stage must not train
    on a silently smaller corpus, so a missing row makes one more run without the cache; rows still
    missing after that raise IncompletePipelineOutput.
    """
    for use_cache in (True, False):
        distiset = run_pipeline(pipeline, config, use_cache=use_cache)
        rows = {key(row): row for row in distiset["default"]["train"]}
        missing = [wanted for wanted in expected if wanted not in rows]
        if not missing:
            return rows
        if use_cache:
            warnings.warn(
                f"pipeline {pipeline.name}: {len(missing)} row(s) missing from the cached run; running again "
                "without the cache",
                stacklevel=2,
            )
    raise IncompletePipelineOutput(
        f"pipeline {pipeline.name} returned no row for {len(missing)} input(s), e.g. {missing[:3]}"
    )
