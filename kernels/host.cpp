// Host build of the kernels: the same per-element functions as the CUDA kernels, looped
// on the CPU. Built with g++ -O2 -ffp-contract=off into a shared library that
// deploykit/kernels/host.py calls through ctypes (tests compare it with numpy and
// OpenCV; the Engine uses it as its CPU pre/post-processing path).
#include "deploykit/nms.h"
#include "deploykit/postprocess.h"
#include "deploykit/preprocess.h"

#include <algorithm>
#include <vector>

#define DK_HOST_ABI 2

extern "C" {

int dk_host_abi_version(void) { return DK_HOST_ABI; }

int dk_host_preprocess_params_size(void) { return (int)sizeof(DkPreprocessParams); }

int dk_host_detect_params_size(void) { return (int)sizeof(DkDetectParams); }

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

// YOLO decode + class-aware NMS per image: the decisions of kernels/nms.cu, with a sort in
// place of the rank count (both follow dk_ranks_before, a total order) and a sequential
// greedy pass. Outputs are [batch, max_det, ...]; out_counts[n] says how many are filled.
int dk_host_detect(const DkDetectParams* p, const float* pred, int batch, const float* geometry, float* out_boxes,
                   float* out_scores, int* out_classes, int* out_counts) {
    if (!p || !pred || !geometry || batch < 0 || p->num_classes <= 0 || p->anchors < 0 || p->max_candidates <= 0 ||
        p->max_det <= 0) {
        return 1;
    }
    int A = p->anchors;
    std::vector<float> boxes((size_t)A * 4), scores(A);
    std::vector<int> classes(A), cand;
    std::vector<unsigned char> gone;
    for (int n = 0; n < batch; ++n) {
        const float* img = pred + (long long)n * (4 + p->num_classes) * A;
        cand.clear();
        for (int a = 0; a < A; ++a) {
            if (dk_decode_anchor(img, p, a, &boxes[(size_t)a * 4], &scores[a], &classes[a])) cand.push_back(a);
        }
        std::sort(cand.begin(), cand.end(), [&](int j, int i) { return dk_ranks_before(scores[j], j, scores[i], i) != 0; });
        int m = dk_min_i((int)cand.size(), p->max_candidates);
        gone.assign(m, 0);
        int kept = 0;
        for (int i = 0; i < m && kept < p->max_det; ++i) {
            if (gone[i]) continue;
            int ai = cand[i];
            long long o = (long long)n * p->max_det + kept;
            dk_unletterbox(&boxes[(size_t)ai * 4], geometry + (long long)n * DK_GEOM_SIZE, out_boxes + o * 4);
            out_scores[o] = scores[ai];
            out_classes[o] = classes[ai];
            ++kept;
            for (int j = i + 1; j < m; ++j) {
                int aj = cand[j];
                if (!gone[j] && dk_suppresses(&boxes[(size_t)ai * 4], classes[ai], &boxes[(size_t)aj * 4], classes[aj], p->iou)) {
                    gone[j] = 1;
                }
            }
        }
        out_counts[n] = kept;
    }
    return 0;
}

}  // extern "C"
