/* Collective agreement on inputs and outcomes (ring_agree.c). */
#ifndef ATTN_RING_AGREE_H
#define ATTN_RING_AGREE_H

#include "ring_internal.h"

/* Every rank passes its own status and message; every rank returns the
 * lowest failing rank's status and sets that message as its own. */
attn_status ring_agree_status(MPI_Comm comm, int rank, attn_status local, const char *message);

/* Checks this rank's request, agrees with the others, and checks that all
 * ranks pass the same problem with shards that tile the sequence. Fills
 * local_seqs (`ranks` entries) with every rank's rows. */
attn_status ring_agree_inputs(MPI_Comm comm, int rank, int ranks, attn_context_t ctx,
                              const attn_ring_params *rp, const attn_ring_tensors *t,
                              int32_t *local_seqs);

/* ATTN_RING_ERR_MPI with MPI's error string. */
attn_status ring_mpi_fail(int rank, int code, const char *what);

#endif
