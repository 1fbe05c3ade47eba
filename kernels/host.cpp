// Host build of the kernels: the same per-element functions as the CUDA kernels, looped
// on the CPU. Built with g++ -O2 -ffp-contract=off into a shared library that
// deploykit/runtime/kernels/host.py calls through ctypes (tests compare it with numpy and
// OpenCV; the Engine uses it as its CPU pre/post-processing path).
#include "deploykit/postprocess.h"
#include "deploykit/preprocess.h"

#define DK_HOST_ABI 1

extern "C" {

int dk_host_abi_version(void) { return DK_HOST_ABI; }

int dk_host_preprocess_params_size(void) { return (int)sizeof(DkPreprocessParams); }

void dk_host_f32_to_f16(const float* x, unsigned short* y, long long n) {
    for (long long i = 0; i < n; ++i) y[i] = dk_f32_to_f16_bits(x[i]);
}

int dk_host_preprocess(const DkPreprocessParams* p, const unsigned char* src, void* dst, int batch) {
    if (!p || !src || !dst || batch < 0 || p->src_h <= 0 || p->src_w <= 0 || p->content_h <= 0 || p->content_w <= 0) {
        return 1;
    }
    for (int n = 0; n < batch; ++n) {
        const unsigned char* img = src + (long long)n * p->src_image_stride;
        for (int y = 0; y < p->out_h; ++y) {
            for (int x = 0; x < p->out_w; ++x) dk_preprocess_pixel(p, img, dst, n, y, x);
        }
    }
    return 0;
}

int dk_host_softmax_topk(const float* logits, int rows, int n, int k, float* top_scores, int* top_index, float* probs) {
    if (!logits || rows < 0 || n <= 0 || k <= 0 || k > n) return 1;
    for (int r = 0; r < rows; ++r) {
        dk_softmax_topk_row(logits + (long long)r * n, n, k, top_scores + (long long)r * k, top_index + (long long)r * k,
                            probs ? probs + (long long)r * n : 0);
    }
    return 0;
}

int dk_host_argmax_channels(const float* logits, int batch, int channels, long long plane, int* labels) {
    if (!logits || !labels || batch < 0 || channels <= 0 || plane <= 0) return 1;
    for (long long i = 0; i < (long long)batch * plane; ++i) {
        long long n = i / plane, pixel = i % plane;
        labels[i] = dk_argmax_pixel(logits + n * channels * plane, channels, plane, pixel);
    }
    return 0;
}

}  // extern "C"
