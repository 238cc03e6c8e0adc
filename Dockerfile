FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lmstrix ./lmstrix
COPY migrations ./migrations
RUN pip install --no-cache-dir .
# exec form everywhere, so SIGTERM reaches dramatiq's main process
CMD ["lmstrix", "--help"]
