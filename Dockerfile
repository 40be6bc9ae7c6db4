# One image for the web process and every worker (compose.yaml picks the command).
# CPU torch by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DJANGO_SETTINGS_MODULE=webapp.settings
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput
RUN useradd --create-home studio && mkdir -p /data && chown studio /data
USER studio
EXPOSE 8000
CMD ["python", "-m", "webapp.server", "-b", "0.0.0.0", "-p", "8000", "webapp.asgi:application"]
