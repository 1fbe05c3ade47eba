/* Postprocessing math: row softmax with top-k (classification) and per-pixel argmax
 * over channels (segmentation). Ties go to the lower index, as numpy's argmax and a
 * stable descending sort do. NaN logits are never selected.
 */
#ifndef DEPLOYKIT_POSTPROCESS_H
#define DEPLOYKIT_POSTPROCESS_H

#include "deploykit/common.h"

/* Softmax of one row of `n` logits; writes the k largest probabilities (descending) and
 * their class indices. `probs` (optional, may be null) receives the whole softmax row.
 * k passes over the row: the rows are short (classes), k is small (1..5 typically). */
DK_HD void dk_softmax_topk_row(const float* row, int n, int k, float* top_scores, int* top_index, float* probs) {
    float m = -DK_INF;
    for (int i = 0; i < n; ++i) {
        if (row[i] > m) m = row[i];
    }
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (row[i] == row[i]) sum += expf(row[i] - m);
    }
    float inv = 1.0f / sum;
    if (probs) {
        for (int i = 0; i < n; ++i) probs[i] = expf(row[i] - m) * inv;
    }
    /* Selection: the j-th pick is the largest logit strictly "after" the (j-1)-th in
     * (value descending, index ascending) order, so no scratch memory is needed. */
    float prev_v = DK_INF;
    int prev_i = -1;
    for (int j = 0; j < k; ++j) {
        int best = -1;
        float best_v = -DK_INF;
        for (int i = 0; i < n; ++i) {
            float v = row[i];
            if (v != v) continue;
            int after_prev = v < prev_v || (v == prev_v && i > prev_i);
            if (!after_prev) continue;
            if (best < 0 || v > best_v) {
                best = i;
                best_v = v;
            }
        }
        top_index[j] = best;
        top_scores[j] = best < 0 ? 0.0f : expf(best_v - m) * inv;
        if (best >= 0) {
            prev_v = best_v;
            prev_i = best;
        }
    }
}

/* Argmax over the C channels of one pixel of an NCHW map; `pixel` indexes the H*W plane. */
DK_HD int dk_argmax_pixel(const float* image, int channels, long long plane, long long pixel) {
    int best = 0;
    float best_v = image[pixel];
    for (int c = 1; c < channels; ++c) {
        float v = image[(long long)c * plane + pixel];
        if (v > best_v || (best_v != best_v && v == v)) {
            best = c;
            best_v = v;
        }
    }
    return best;
}

#endif /* DEPLOYKIT_POSTPROCESS_H */
