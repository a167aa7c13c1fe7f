/* Included by every file of lib/ (through attn_internal.h): in the
 * fault-injection build, routes the OpenCL calls and host allocations that
 * tests make fail through lib/fault_injection.c. In the release build it
 * changes nothing. */
#ifndef ATTN_CL_CALLS_H
#define ATTN_CL_CALLS_H

#ifdef ATTN_FAULT_INJECTION
#include "fault_injection.h"

/* Declared before the macros below so that later includes see the real names. */
#include <stdlib.h>
#include <string.h>

#define clCreateContext attn_fault_clCreateContext
#define clCreateCommandQueue attn_fault_clCreateCommandQueue
#define clCreateBuffer attn_fault_clCreateBuffer
#define clCreateProgramWithSource attn_fault_clCreateProgramWithSource
#define clCreateProgramWithBinary attn_fault_clCreateProgramWithBinary
#define clBuildProgram attn_fault_clBuildProgram
#define clCreateKernel attn_fault_clCreateKernel
#define clSetKernelArg attn_fault_clSetKernelArg
#define clEnqueueNDRangeKernel attn_fault_clEnqueueNDRangeKernel
#define clEnqueueReadBuffer attn_fault_clEnqueueReadBuffer
#define clEnqueueWriteBuffer attn_fault_clEnqueueWriteBuffer
#define clEnqueueFillBuffer attn_fault_clEnqueueFillBuffer
#define clGetMemObjectInfo attn_fault_clGetMemObjectInfo
#define clGetContextInfo attn_fault_clGetContextInfo
#define clGetCommandQueueInfo attn_fault_clGetCommandQueueInfo
#define malloc attn_fault_malloc
#define calloc attn_fault_calloc
#define strdup attn_fault_strdup
#endif

#endif
