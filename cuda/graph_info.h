// graph_info.h: a diagnostic summary of a captured CUDA graph (graph_info.cpp).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>

namespace based_core {
namespace cuda {

/// BASED_CORE_GRAPH_INFO is set (and not "0").
bool graph_info_enabled();

/// Prints the graph's kernel nodes per function, with how many follow their predecessor
/// through a programmatic (PDL) edge, and the edge counts.
void describe_graph(cudaGraph_t graph, std::FILE* out);

}  // namespace cuda
}  // namespace based_core
