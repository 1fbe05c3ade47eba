// CUDA kernels: softmax + top-k per row (one thread per row: classification batches are
// small and k passes over a few hundred classes is cheap), and argmax over channels per
// pixel (one thread per pixel). The math lives in include/deploykit/postprocess.h.
#include "deploykit/postprocess.h"

extern "C" __global__ void dk_softmax_topk(const float* logits, int rows, int n, int k, float* top_scores,
                                           int* top_index) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    dk_softmax_topk_row(logits + (long long)r * n, n, k, top_scores + (long long)r * k, top_index + (long long)r * k, 0);
}

extern "C" __global__ void dk_argmax_channels(const float* logits, int batch, int channels, long long plane, int* labels) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)batch * plane) return;
    long long n = i / plane, pixel = i % plane;
    labels[i] = dk_argmax_pixel(logits + n * channels * plane, channels, plane, pixel);
}
