// CUDA kernels: YOLO head decode + class-aware NMS, three launches per batch.
//   dk_detect_decode  one thread per anchor: best class, score, x1y1x2y2 box (cls -1: no candidate)
//   dk_detect_rank    one thread per candidate: its position in (score desc, anchor asc) order,
//                     counted over all candidates (a rank count needs no sort library, and
//                     A is at most a few tens of thousands)
//   dk_detect_nms     one block per image: the greedy pass in that order; for each kept box
//                     the block's threads mark the later candidates it suppresses
// The per-anchor and per-pair math is include/deploykit/nms.h, shared with the host build,
// so both make the same decisions.
#include "deploykit/nms.h"

#define DK_NMS_BLOCK 256

extern "C" __global__ void dk_detect_decode(DkDetectParams p, const float* pred, float* cand_box, float* cand_score,
                                            int* cand_cls) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    int n = blockIdx.y;
    if (a >= p.anchors) return;
    long long slot = (long long)n * p.anchors + a;
    float box[4], score;
    int cls;
    int ok = dk_decode_anchor(pred + (long long)n * (4 + p.num_classes) * p.anchors, &p, a, box, &score, &cls);
    for (int k = 0; k < 4; ++k) cand_box[slot * 4 + k] = box[k];
    cand_score[slot] = score;
    cand_cls[slot] = ok ? cls : -1;
}

extern "C" __global__ void dk_detect_rank(DkDetectParams p, const float* cand_score, const int* cand_cls, int* order) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    int n = blockIdx.y;
    if (a >= p.anchors) return;
    const float* score = cand_score + (long long)n * p.anchors;
    const int* cls = cand_cls + (long long)n * p.anchors;
    if (cls[a] < 0) return;
    int rank = 0;
    for (int b = 0; b < p.anchors; ++b) {
        if (cls[b] >= 0 && dk_ranks_before(score[b], b, score[a], a)) ++rank;
    }
    if (rank < p.max_candidates) order[(long long)n * p.max_candidates + rank] = a;
}

extern "C" __global__ void dk_detect_nms(DkDetectParams p, const float* geometry, const float* cand_box,
                                         const float* cand_score, const int* cand_cls, const int* order,
                                         unsigned char* removed, float* out_box, float* out_score, int* out_cls,
                                         int* out_count) {
    __shared__ int s_count;
    __shared__ int s_kept;
    int n = blockIdx.x, tid = threadIdx.x;
    long long base = (long long)n * p.anchors;
    const int* ord = order + (long long)n * p.max_candidates;
    unsigned char* gone = removed + (long long)n * p.max_candidates;
    if (tid == 0) {
        s_count = 0;
        s_kept = 0;
    }
    __syncthreads();
    int local = 0;
    for (int a = tid; a < p.anchors; a += blockDim.x) local += cand_cls[base + a] >= 0;
    atomicAdd(&s_count, local);
    __syncthreads();
    int m = dk_min_i(s_count, p.max_candidates);
    for (int j = tid; j < m; j += blockDim.x) gone[j] = 0;
    __syncthreads();
    for (int i = 0; i < m; ++i) {
        int kept = s_kept;  // the same value in every thread: written by thread 0 before the last barrier
        if (kept >= p.max_det) break;
        if (gone[i]) continue;  // uniform: written before the last barrier
        int ai = ord[i];
        const float* box_i = cand_box + (base + ai) * 4;
        int cls_i = cand_cls[base + ai];
        if (tid == 0) {
            long long o = (long long)n * p.max_det + kept;
            dk_unletterbox(box_i, geometry + (long long)n * DK_GEOM_SIZE, out_box + o * 4);
            out_score[o] = cand_score[base + ai];
            out_cls[o] = cls_i;
        }
        for (int j = i + 1 + tid; j < m; j += blockDim.x) {
            int aj = ord[j];
            if (!gone[j] && dk_suppresses(box_i, cls_i, cand_box + (base + aj) * 4, cand_cls[base + aj], p.iou)) gone[j] = 1;
        }
        __syncthreads();
        if (tid == 0) s_kept = kept + 1;
        __syncthreads();
    }
    if (tid == 0) out_count[n] = s_kept;
}
