# Reproduction image: `docker build -t repro .` then e.g.
#   docker run --rm -v /path/to/data:/data -v $PWD/results:/repro/results repro \
#       repro run lstm-ptb --machines 4 --preset quick --data-dir /data/ptb
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /repro
COPY pyproject.toml README.md ./
COPY repro ./repro
COPY tasks ./tasks
COPY tests ./tests
RUN pip install --no-cache-dir -e ".[dev]"
CMD ["repro", "--help"]
