/*
 * sdpa_cu_names.h — include before each inclusion of runtime/cuda/sdpa.cu in a test: every
 * function the file defines gets the prefix SDPA_PFX (mpl_sdpa_fwd -> SDPA_PFX_fwd,
 * mpl_tc_ld2 -> SDPA_PFX_tc_ld2, ...), so one translation unit can hold several builds of
 * it (head sizes, input types). sdpa_cu_unnames.h, after the inclusion, takes back these
 * names and the macros the file defines. Add a name here when sdpa.cu gets a function.
 */
#define SDPA_NAME_(p, n) p##_##n
#define SDPA_NAME(p, n) SDPA_NAME_(p, n)
#define mpl_sdpa_bf16 SDPA_NAME(SDPA_PFX, bf16)
#define mpl_sdpa_seen SDPA_NAME(SDPA_PFX, seen)
#define mpl_sdpa_keys SDPA_NAME(SDPA_PFX, keys)
#define mpl_sdpa_stage SDPA_NAME(SDPA_PFX, stage)
#define mpl_sdpa_fwd SDPA_NAME(SDPA_PFX, fwd)
#define mpl_sdpa_bwd_q SDPA_NAME(SDPA_PFX, bwd_q)
#define mpl_sdpa_bwd_kv SDPA_NAME(SDPA_PFX, bwd_kv)
#define mpl_sdpa_fwd_tc SDPA_NAME(SDPA_PFX, fwd_tc)
#define mpl_sdpa_bwd_q_tc SDPA_NAME(SDPA_PFX, bwd_q_tc)
#define mpl_sdpa_bwd_kv_tc SDPA_NAME(SDPA_PFX, bwd_kv_tc)
#define mpl_sdpa_bwd_dk_tc SDPA_NAME(SDPA_PFX, bwd_dk_tc)
#define mpl_sdpa_bwd_dv_tc SDPA_NAME(SDPA_PFX, bwd_dv_tc)
#define mpl_tc_bwd_keys SDPA_NAME(SDPA_PFX, tc_bwd_keys)
#define mpl_sdpa_fwd_x3 SDPA_NAME(SDPA_PFX, fwd_x3)
#define mpl_sdpa_bwd_q_x3 SDPA_NAME(SDPA_PFX, bwd_q_x3)
#define mpl_sdpa_bwd_dk_x3 SDPA_NAME(SDPA_PFX, bwd_dk_x3)
#define mpl_sdpa_bwd_dv_x3 SDPA_NAME(SDPA_PFX, bwd_dv_x3)
#define mpl_tc_fwd SDPA_NAME(SDPA_PFX, tc_fwd)
#define mpl_tc_bwd_q SDPA_NAME(SDPA_PFX, tc_bwd_q)
#define mpl_tc_split SDPA_NAME(SDPA_PFX, tc_split)
#define mpl_tc_mma_f32 SDPA_NAME(SDPA_PFX, tc_mma_f32)
#define mpl_tc_ld2 SDPA_NAME(SDPA_PFX, tc_ld2)
#define mpl_tc_pack SDPA_NAME(SDPA_PFX, tc_pack)
#define mpl_tc_max SDPA_NAME(SDPA_PFX, tc_max)
#define mpl_tc_rows_a SDPA_NAME(SDPA_PFX, tc_rows_a)
#define mpl_tc_stage SDPA_NAME(SDPA_PFX, tc_stage)
#define mpl_tc_row_b SDPA_NAME(SDPA_PFX, tc_row_b)
#define mpl_tc_col_b SDPA_NAME(SDPA_PFX, tc_col_b)
#define mpl_tc_acc_a SDPA_NAME(SDPA_PFX, tc_acc_a)
#define mpl_tc_rows_dot SDPA_NAME(SDPA_PFX, tc_rows_dot)
#define mpl_tc_held_dot SDPA_NAME(SDPA_PFX, tc_held_dot)
#define mpl_tc_hold SDPA_NAME(SDPA_PFX, tc_hold)
#define mpl_tc_cols_dot SDPA_NAME(SDPA_PFX, tc_cols_dot)
#define mpl_tc_store SDPA_NAME(SDPA_PFX, tc_store)
#define mpl_tc_query_block SDPA_NAME(SDPA_PFX, tc_query_block)
