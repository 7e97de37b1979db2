# FLARE 2024 Task 3 submission image: the stripped nnU-Net predictor (inference/), the default model
# (weights/) and predict.sh in /workspace, on a venv that holds only what the predictor imports.
#
#   docker build -t flare-mri-seg:cuda .                                   # CUDA 12.1 torch from PyPI
#   docker build --build-arg TORCH_SPEC= --build-arg OPENVINO_SPEC=openvino==2026.4.1 -t flare-mri-seg .
#       # the CPU image: numpy + SimpleITK + OpenVINO, no torch, no nnunetv2 (docker/build.sh --variant cpu)
#
# Build arguments:
#   BASE_IMAGE    a Debian-based image with python3 (3.11) and the venv module; builder and runtime use
#                 the same one, so the venv's interpreter path is valid in both.
#   TORCH_SPEC    pip requirement for torch. Default: 2.4.1, PyPI's CUDA 12.1 build (driver >= 525.60.13).
#                 Empty: no torch and no nnunetv2 (docker/requirements-torch.txt): the torch-free CPU image,
#                 whose predictor runs the model's OpenVINO IR with numpy (inference.engines.numpy_engine);
#                 a model folder without IR is refused by the build's self-check (convert it first with
#                 `python -m inference.weights ir weights`).
#   TORCH_INDEX_URL  an extra index for torch, e.g. https://download.pytorch.org/whl/cu118 with
#                 TORCH_SPEC=torch==2.4.1+cu118 for drivers older than 525 (CUDA 11.8: driver >= 450.80.02).
#   PIP_OFFLINE   1: install from docker/wheelhouse/ only (air-gapped; `docker/wheelhouse.sh --all`).
#   EXTRA_PIP     more packages for the runtime venv, e.g. scipy for a model with use_mask_for_norm.
#   KEEP_TRITON   1: keep triton (only torch.compile needs it; the predictor does not compile).
#   PRUNE         0: keep torch's C++ headers, test binaries and tools (never used at inference), numpy's
#                 and OpenVINO's build and conversion files.
#   OPENVINO_SPEC pip requirement for OpenVINO, the CPU backend (docker/build.sh --variant cpu sets it;
#                 empty: none, the CUDA image runs torch only). Installed without its telemetry package
#                 and, with PRUNE=1, without what a CPU run of IR never loads: the GPU and NPU plugins
#                 and the GPU kernel cache, the model-conversion frontends (ONNX, TF, PyTorch, ...; only
#                 the IR reader stays), headers and conversion tools.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG TORCH_SPEC=torch==2.4.1
ARG TORCH_INDEX_URL=""
ARG PIP_OFFLINE=0
ARG EXTRA_PIP=""
ARG KEEP_TRITON=0
ARG PRUNE=1
ARG OPENVINO_SPEC=""
# pip reads these from the environment: no cache in any layer, no version check, system CA bundle
# (the same one the base image's Python trusts).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_FIND_LINKS=/wheelhouse
SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/venv
COPY docker/wheelhouse/ /wheelhouse/

# torch with its dependencies (the CUDA build brings the nvidia-* libraries it links), then without
# what `import torch` and eager inference never import: sympy/networkx/jinja2/fsspec serve
# torch.compile, export and the hub; setuptools serves C++ extension builds; triton serves
# torch.compile kernels. The selfcheck below and the CI run of the image prove the rest still works.
# Without TORCH_SPEC (the CPU image) nothing here.
RUN if [ -z "$TORCH_SPEC" ]; then exit 0; fi; \
    if [ "$PIP_OFFLINE" = 1 ]; then export PIP_NO_INDEX=1; fi; \
    if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi; \
    /opt/venv/bin/pip install --quiet "$TORCH_SPEC"; \
    set -- sympy mpmath networkx jinja2 MarkupSafe fsspec; \
    if [ "$KEEP_TRITON" != 1 ]; then set -- "$@" triton pytorch-triton; fi; \
    /opt/venv/bin/pip uninstall --quiet --yes "$@"; \
    if [ "$PRUNE" = 1 ]; then \
        t=/opt/venv/lib/python3.11/site-packages/torch; \
        rm -rf "$t/include" "$t/test" "$t/share" "$t/lib/"*.a "$t/lib/"*test*.so; \
        find "$t/bin" -type f ! -name torch_shm_manager -delete; \
        find /opt/venv/lib/python3.11/site-packages/nvidia -name include -type d -prune -exec rm -rf {} + 2>/dev/null || true; \
    fi

# The rest with --no-deps: numpy, SimpleITK, tqdm for every image; nnunetv2 (it builds the torch network
# from the plans) only beside torch, without its training stack, which the predictor never imports. Then
# pip and the console scripts (nnUNetv2_*, torchrun: not usable without their dependencies) go.
# EXTRA_PIP is split into words on purpose (a list of requirements).
COPY docker/requirements.txt docker/requirements-torch.txt /tmp/
# hadolint ignore=SC2086
RUN if [ "$PIP_OFFLINE" = 1 ]; then export PIP_NO_INDEX=1; fi; \
    /opt/venv/bin/pip install --quiet --no-deps -r /tmp/requirements.txt; \
    if [ -n "$TORCH_SPEC" ]; then /opt/venv/bin/pip install --quiet --no-deps -r /tmp/requirements-torch.txt; fi; \
    if [ -n "$EXTRA_PIP" ]; then /opt/venv/bin/pip install --quiet $EXTRA_PIP; fi; \
    if [ -n "$OPENVINO_SPEC" ]; then \
        /opt/venv/bin/pip install --quiet --no-deps "$OPENVINO_SPEC"; \
        if [ "$PRUNE" = 1 ]; then \
            o=/opt/venv/lib/python3.11/site-packages/openvino; \
            find "$o/libs" -name 'libopenvino_*_frontend.so*' ! -name 'libopenvino_ir_frontend.so*' -delete; \
            rm -rf "$o/libs/libopenvino_intel_gpu_plugin.so" "$o/libs/libopenvino_intel_npu_plugin.so" \
                "$o/libs/libopenvino_auto_batch_plugin.so" "$o/libs/libopenvino_hetero_plugin.so" \
                "$o/libs/libopenvino_auto_plugin.so" "$o/libs/libopenvino_c.so"* "$o/libs/cache.json" \
                "$o/include" "$o/cmake" "$o/tools" "$o/frontend/onnx" "$o/frontend/paddle" "$o/frontend/pytorch" \
                "$o/frontend/tensorflow" "$o/frontend/jax"; \
        fi; \
    fi; \
    if [ "$PRUNE" = 1 ]; then \
        sp=/opt/venv/lib/python3.11/site-packages; \
        find "$sp" -depth -type d -name tests \( -path '*/numpy/*' -o -path '*/SimpleITK/*' \) -exec rm -rf {} +; \
        rm -rf "$sp/numpy/f2py" "$sp/numpy/distutils" "$sp/numpy/_core/include" \
            "$sp/numpy/_core/lib" "$sp/numpy/random/_examples" "$sp/numpy/_pyinstaller" "$sp/numpy/_core/"*_tests.*.so; \
        find "$sp/numpy" -name '*.pyi' -delete; \
        if [ -d "$sp/openvino" ]; then find "$sp/openvino" -name '*.pyi' -delete; fi; \
    fi; \
    /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools; \
    find /opt/venv/bin -type f ! -name 'python*' ! -name 'activate*' -delete

# The predictor (MIND descriptors included, for models that take them), the model and predict.sh. The
# self-check loads the model as the predictor will and runs it once.
WORKDIR /workspace
COPY predict.sh ./
COPY inference/ inference/
COPY weights/ weights/
COPY docker/selfcheck.py /tmp/selfcheck.py
# The OpenVINO compile cache of the build machine's CPU (inference.networks.openvino_network): a run on the
# same CPU reads it instead of compiling; on another CPU it is not used at all. The self-check fills it.
ENV FLARE_OPENVINO_CACHE=/workspace/.openvino_cache
RUN /opt/venv/bin/python -B /tmp/selfcheck.py /workspace; \
    /opt/venv/bin/python -m compileall -q /workspace; \
    chmod -R a+rX /workspace

FROM ${BASE_IMAGE}
ARG TORCH_SPEC=torch==2.4.1
# What tests/test_docker.py checks per variant (the CPU image must hold no torch).
LABEL org.flare.torch="${TORCH_SPEC}"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /workspace /workspace
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLARE_OPENVINO_CACHE=/workspace/.openvino_cache
WORKDIR /workspace
CMD ["sh", "predict.sh"]
