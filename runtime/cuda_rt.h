/*
 * cuda_rt.h — private to the CUDA side of the runtime (device_cuda.c, comm_nccl.c,
 * comm_cuda_world.c, comm_cuda_mpi.c through comm_cuda.h):
 * the checking macros, the streams of a cuda device and the host's waits for them.
 * Included only when MPL_HAVE_CUDA is defined.
 *
 * Invariants: every CUDA, cuBLAS and NCCL call goes through a *_CHECK macro, which
 * returns MPL_ERR from the enclosing function with the call, the library's message and
 * the source position in `err` (an MplErr *); functions that cannot report (_free)
 * use CUDA_SOFT, which drops the error and clears CUDA's last-error state. A host wait
 * for GPU work that may depend on another rank (an NCCL operation) is abortable: it
 * polls and gives up when the communicator's stop flag is raised, so a failed rank
 * never leaves the others blocked in cudaStreamSynchronize.
 */
#ifndef MPL_CUDA_RT_H
#define MPL_CUDA_RT_H

#include <cuda_runtime_api.h>
#include <stdatomic.h>

#include "exec.h"

#define CUDA_CHECK(call)                                                                             \
  do {                                                                                               \
    cudaError_t e_ = (call);                                                                         \
    if (e_ != cudaSuccess) {                                                                         \
      cudaGetLastError();                                                                            \
      return mpl_errf(err, "cuda: %s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    }                                                                                                \
  } while (0)

#define CUDA_SOFT(call)                 \
  do {                                  \
    if ((call) != cudaSuccess) cudaGetLastError(); \
  } while (0)

/* Is p device (or managed) memory? False for host memory and for pointers CUDA does not know. */
bool mpl_cuda_is_device_ptr(const void *p);

/* The streams of an initialised cuda device (d->ops == &mpl_device_cuda_ops): kernels,
 * products and copies to/from the host run on `compute`; messages on `comm`. */
void mpl_cuda_streams(MplDevice *d, cudaStream_t *compute, cudaStream_t *comm);

/* Waits until `event` has happened (or, with event NULL, until `stream` is idle). With stop
 * NULL a plain cudaEventSynchronize / cudaStreamSynchronize; else polls and fails with a
 * message once *stop is non-zero (another rank failed: the work may never finish). */
int mpl_cuda_wait(cudaStream_t stream, cudaEvent_t event, const atomic_int *stop, MplErr *err);
/* The stop flag this device's waits (sync, copy_to_host) watch; NULL: plain waits. Set by a
 * communicator whose NCCL operations make the device's work depend on other ranks; the
 * flag must outlive the device or be reset to NULL first. */
void mpl_cuda_set_stop(MplDevice *d, const atomic_int *stop);
/* MPL_CUDA_GRAPHS: the work the device has captured but not launched yet goes to the GPU now
 * (as device_cuda_graph.c's cudev_graph_flush); a communicator calls it before a message or
 * a collective touches the device's streams or waits for a peer, so those run between the
 * graphs, in the order the program gives. Nothing to do without graphs. */
int mpl_cuda_flush(MplDevice *d, MplErr *err);
/* MPL_CUDA_GRAPHS: an open capture (a failed run's) ended and dropped, its work never run: a
 * communicator calls it at its end, before it synchronizes the device. */
void mpl_cuda_drop(MplDevice *d);

#endif
