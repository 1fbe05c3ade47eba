/* Detection postprocessing math: decode of a YOLO head, class-aware non-maximum
 * suppression, and the letterbox mapped back to the original image.
 *
 * Input: the head output of one image, `[4 + nc, A]` float32, channel-major (what
 * Ultralytics' Detect writes in export mode: rows 0..3 are cx, cy, w, h in model-input
 * pixels after DFL and the anchor/stride transform; rows 4.. are sigmoid class scores).
 *
 * Every decision is a function of one anchor or one pair of anchors, so the CUDA kernel
 * (kernels/nms.cu: one thread per anchor, then one block per image for the greedy pass)
 * and the host build (kernels/host.cpp: plain loops and a sort) make the same decisions:
 *   candidate   best class per anchor (ties: lower class), kept when its score > conf;
 *   order       score descending, ties by the lower anchor index (a total order, so a
 *               sort and a rank count agree); the first max_candidates are considered;
 *   suppression greedy in that order: a candidate is dropped when a kept one of the same
 *               class overlaps it with IoU > iou (so IoU == iou keeps both, NaN keeps both);
 *   output      the first max_det survivors, mapped back through the letterbox and clipped.
 */
#ifndef DEPLOYKIT_NMS_H
#define DEPLOYKIT_NMS_H

#include "deploykit/common.h"

/* Settings shared by every image of a batch. Python mirrors it with ctypes;
 * dk_host_detect_params_size() lets the wrapper check the layouts agree. */
typedef struct DkDetectParams {
    int num_classes;    /* nc: rows 4 .. 4 + nc - 1 of the head output */
    int anchors;        /* A: columns of the head output */
    int max_candidates; /* candidates considered by the suppression (the best by score) */
    int max_det;        /* detections kept per image */
    float conf;         /* a candidate's best class score must exceed this */
    float iou;          /* IoU above which a same-class box is suppressed */
} DkDetectParams;

/* Per image: where the resized image sits in the model input and how to map back. */
#define DK_GEOM_TOP 0
#define DK_GEOM_LEFT 1
#define DK_GEOM_SCALE_Y 2 /* original pixels per model-input pixel */
#define DK_GEOM_SCALE_X 3
#define DK_GEOM_SRC_H 4 /* original image size: boxes are clipped to it */
#define DK_GEOM_SRC_W 5
#define DK_GEOM_SIZE 6

/* Best class of anchor `a` and its score; its box as x1, y1, x2, y2 (model-input
 * pixels). Returns 1 when the anchor is a candidate (score > conf). NaN scores are
 * never picked; an anchor whose scores are all NaN is no candidate. */
DK_HD int dk_decode_anchor(const float* pred, const DkDetectParams* p, int a, float* box, float* score, int* cls) {
    long long A = p->anchors;
    int best = -1;
    float best_v = 0.0f;
    for (int c = 0; c < p->num_classes; ++c) {
        float v = pred[(4LL + c) * A + a];
        if (v != v) continue;
        if (best < 0 || v > best_v) {
            best = c;
            best_v = v;
        }
    }
    float cx = pred[a], cy = pred[A + a], w = pred[2 * A + a], h = pred[3 * A + a];
    box[0] = cx - 0.5f * w;
    box[1] = cy - 0.5f * h;
    box[2] = cx + 0.5f * w;
    box[3] = cy + 0.5f * h;
    *score = best_v;
    *cls = best;
    return best >= 0 && best_v > p->conf;
}

/* Whether candidate (score_j, j) comes before (score_i, i): score descending, then index ascending. */
DK_HD int dk_ranks_before(float score_j, int j, float score_i, int i) {
    return score_j > score_i || (score_j == score_i && j < i);
}

/* Intersection over union of two x1, y1, x2, y2 boxes, computed as torchvision's nms does:
 * inter / (area_a + area_b - inter), widths and heights clamped at zero. Two empty boxes
 * give 0 / 0 = NaN, which suppresses nothing. */
DK_HD float dk_iou_xyxy(const float* a, const float* b) {
    float area_a = (a[2] - a[0]) * (a[3] - a[1]);
    float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    float x1 = a[0] > b[0] ? a[0] : b[0];
    float y1 = a[1] > b[1] ? a[1] : b[1];
    float x2 = a[2] < b[2] ? a[2] : b[2];
    float y2 = a[3] < b[3] ? a[3] : b[3];
    float w = x2 - x1, h = y2 - y1;
    if (w < 0.0f) w = 0.0f;
    if (h < 0.0f) h = 0.0f;
    float inter = w * h;
    return inter / (area_a + area_b - inter);
}

/* Whether a kept box (box_i, cls_i) suppresses the candidate (box_j, cls_j). */
DK_HD int dk_suppresses(const float* box_i, int cls_i, const float* box_j, int cls_j, float iou) {
    return cls_i == cls_j && dk_iou_xyxy(box_i, box_j) > iou;
}

DK_HD float dk_clampf(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* A model-input box → the original image's pixels: undo the letterbox offset and scale,
 * then clip to the image (Ultralytics' scale_boxes + clip_boxes). */
DK_HD void dk_unletterbox(const float* box, const float* geom, float* out) {
    out[0] = dk_clampf((box[0] - geom[DK_GEOM_LEFT]) * geom[DK_GEOM_SCALE_X], 0.0f, geom[DK_GEOM_SRC_W]);
    out[1] = dk_clampf((box[1] - geom[DK_GEOM_TOP]) * geom[DK_GEOM_SCALE_Y], 0.0f, geom[DK_GEOM_SRC_H]);
    out[2] = dk_clampf((box[2] - geom[DK_GEOM_LEFT]) * geom[DK_GEOM_SCALE_X], 0.0f, geom[DK_GEOM_SRC_W]);
    out[3] = dk_clampf((box[3] - geom[DK_GEOM_TOP]) * geom[DK_GEOM_SCALE_Y], 0.0f, geom[DK_GEOM_SRC_H]);
}

#endif /* DEPLOYKIT_NMS_H */
