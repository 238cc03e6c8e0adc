"""Where the facades and the CLI turn the configuration into a :class:`JobService`.

The configuration is read here, at the edge, and handed down as a :class:`JobsConfig`: the jobs
layer below never opens a file or reads the environment.
"""

from __future__ import annotations

from lmstrix.core.config import Config
from lmstrix.jobs.jobs_config import JobsConfig
from lmstrix.jobs.service import JobService


def jobs_config(
    config: Config,
    *,
    database_url: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> JobsConfig:
    """What the jobs layer needs of ``config``. ``database_url`` overrides the configured
    database; ``timeout`` (seconds per inference request) and ``max_retries`` override the
    ``[lmstudio]`` values for the clients this caller's jobs use (a falsy ``timeout`` keeps the
    configured one)."""
    lm = config.settings.lmstudio
    lm = lm.model_copy(
        update={
            "timeout": timeout or lm.timeout,
            "max_retries": lm.max_retries if max_retries is None else max_retries,
        }
    )
    return JobsConfig(
        database_url=database_url or config.database_url(),
        hosts=tuple(config.hosts),
        redis_url=config.redis_url,
        queue=config.settings.queue,
        lmstudio=lm,
    )


def open_job_service(
    config: Config | None = None,
    *,
    database_url: str | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> JobService:
    """A :class:`JobService` on ``config`` (None: the user's configuration, read now).

    ``base_url`` pins work that names no host to that LM Studio (a configured host with that
    URL, or one named after its address); otherwise any configured host that has the model.
    """
    config = config or Config.load()
    jobs = jobs_config(config, database_url=database_url, timeout=timeout, max_retries=max_retries)
    pinned = [config.host_for_url(base_url)] if base_url else None
    return JobService(jobs, hosts=pinned)
