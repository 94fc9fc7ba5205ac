// graph_info.cpp: BASED_CORE_GRAPH_INFO=1 prints, for every graph the backend captures (decode
// steps), how its kernels are chained: the kernel nodes per function and how many of them
// follow their predecessor through a programmatic (PDL) edge. A diagnostic for the decode
// profile (bench/PROFILE_decode.md): our kernels are launched with PDL, but cuBLASLt launches
// its own, and only the captured edges show whether those may start before the kernel ahead
// of them ends (the time between kernels is 7-9% of a based-1b step at B >= 16).
#include "graph_info.h"

#include <cublasLt.h>
#include <cuda.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

// CUDA 13 folded the edge-data variants (cudaGraphGetEdges_v2) into the plain names.
#if CUDART_VERSION >= 13000
#define BC_GRAPH_GET_EDGES cudaGraphGetEdges
#elif CUDART_VERSION >= 12050
#define BC_GRAPH_GET_EDGES cudaGraphGetEdges_v2
#endif

namespace based_core {
namespace cuda {

bool graph_info_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("BASED_CORE_GRAPH_INFO");
    return e && *e && std::string(e) != "0";
  }();
  return on;
}

#ifdef BC_GRAPH_GET_EDGES
namespace {

struct Counts {
  int nodes = 0;
  int programmatic_in = 0;  // nodes of this function with a programmatic incoming edge
};

using GetParams = CUresult(CUDAAPI*)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS*);
using FuncName = CUresult(CUDAAPI*)(const char**, CUfunction);
using KernelName = CUresult(CUDAAPI*)(const char**, CUkernel);

// A driver entry point without linking libcuda (the backend links only cudart); null if absent.
template <class F>
F driver_fn(const char* symbol) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(symbol, &fn, 12030, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return reinterpret_cast<F>(fn);
}

std::string kernel_name(cudaGraphNode_t node) {
  static const GetParams get = driver_fn<GetParams>("cuGraphKernelNodeGetParams");
  static const FuncName func_name = driver_fn<FuncName>("cuFuncGetName");
  static const KernelName kern_name = driver_fn<KernelName>("cuKernelGetName");
  CUDA_KERNEL_NODE_PARAMS p{};
  const char* name = nullptr;
  if (get && get(node, &p) == CUDA_SUCCESS) {
    if (p.func && func_name) func_name(&name, p.func);
    if (!name && p.kern && kern_name) kern_name(&name, p.kern);
  }
  return name ? std::string(name) : std::string("(name unavailable)");
}

}  // namespace

void describe_graph(cudaGraph_t graph, std::FILE* out) {
  std::size_t n_nodes = 0, n_edges = 0;
  if (cudaGraphGetNodes(graph, nullptr, &n_nodes) != cudaSuccess ||
      BC_GRAPH_GET_EDGES(graph, nullptr, nullptr, nullptr, &n_edges) != cudaSuccess) {
    std::fprintf(out, "based_core graph: could not read the graph (%s)\n", cudaGetErrorString(cudaGetLastError()));
    return;
  }
  std::vector<cudaGraphNode_t> nodes(n_nodes), from(n_edges), to(n_edges);
  std::vector<cudaGraphEdgeData> data(n_edges);
  cudaGraphGetNodes(graph, nodes.data(), &n_nodes);
  BC_GRAPH_GET_EDGES(graph, from.data(), to.data(), data.data(), &n_edges);
  std::set<cudaGraphNode_t> programmatic_in;  // nodes with a programmatic incoming edge
  int programmatic = 0, launch_completion = 0;
  for (std::size_t i = 0; i < n_edges; ++i) {
    if (data[i].type != cudaGraphDependencyTypeProgrammatic) continue;
    ++programmatic;
    if (data[i].from_port == cudaGraphKernelNodePortLaunchCompletion) ++launch_completion;
    programmatic_in.insert(to[i]);
  }
  std::map<std::string, Counts> by_name;
  int kernels = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type{};
    if (cudaGraphNodeGetType(node, &type) != cudaSuccess || type != cudaGraphNodeTypeKernel) continue;
    ++kernels;
    Counts& c = by_name[kernel_name(node)];
    ++c.nodes;
    c.programmatic_in += programmatic_in.count(node) ? 1 : 0;
  }
  std::vector<std::pair<std::string, Counts>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.nodes > b.second.nodes; });
  std::fprintf(out,
               "based_core graph: %zu nodes (%d kernels), %zu edges, %d programmatic (%d at launch "
               "completion); cuBLASLt %zu\n  nodes  PDL-in  kernel\n",
               n_nodes, kernels, n_edges, programmatic, launch_completion, cublasLtGetVersion());
  for (const auto& r : rows)
    std::fprintf(out, "  %5d  %6d  %.160s\n", r.second.nodes, r.second.programmatic_in, r.first.c_str());
  std::fflush(out);
}
#else
void describe_graph(cudaGraph_t, std::FILE* out) {
  std::fprintf(out, "based_core graph: BASED_CORE_GRAPH_INFO needs a build with CUDA 12.5 or later\n");
}
#endif

}  // namespace cuda
}  // namespace based_core
