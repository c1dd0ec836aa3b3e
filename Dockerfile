# The order service image: gunicorn with the same gunicorn.conf.py and arguments the local
# launcher uses (harness/replicas.py, GUNICORN_ARGS), plus the benchmark for the in-cluster
# Job. Build from the repository root: docker build -t order-service:0.1.0 .

# Build stage: a virtualenv with requirements-image.txt only (no test or lint tools), from
# wheels only, except gunicorn_h1c (gunicorn's C HTTP parser), which the registry ships as
# source only: this stage is the full Debian image, whose gcc compiles it. The final stage is
# slim and has no compiler.
FROM python:3.11.14-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements-image.txt /tmp/requirements-image.txt
# --without-pip: the virtualenv holds exactly the pinned packages; the base image's pip
# installs into it and checks that their requirements are met.
RUN python -m venv --without-pip /venv \
    && python -m pip --python /venv/bin/python install --only-binary=:all: \
        --no-binary=gunicorn-h1c -r /tmp/requirements-image.txt \
    && python -m pip --python /venv/bin/python check

# Final stage: the same base, the virtualenv and the application files, owned by root and
# read-only to the unprivileged user that runs them.
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="order-service" \
      org.opencontainers.image.description="Order service that never oversells (Flask, redis-py, gunicorn)" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    GUNICORN_WORKER_TMP_DIR=/dev/shm
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /venv /venv
WORKDIR /app
COPY gunicorn.conf.py ./
COPY lua/ lua/
COPY service/ service/
COPY harness/ harness/
COPY benchmarks/ benchmarks/
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "service:create_app()"]
