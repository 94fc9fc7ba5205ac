# Decides whether the CUDA backend is built, and finds cuBLASLt in the CUDA
# toolkit or in the `nvidia-cublas` Python wheel (CI's toolkit has no cuBLAS).
set(BASED_CORE_HAVE_CUDA OFF)
set(BASED_CORE_CUDA_VERSION_STR "none")
set(BASED_CORE_CUDA_ARCHS_STR "none")
if(BASED_CORE_CUDA STREQUAL "OFF")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(BASED_CORE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "BASED_CORE_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
  message(STATUS "based_core: no nvcc found, building the CPU backend only")
  return()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Hopper with wgmma/TMA, plus a portable Ampere target.
  set(CMAKE_CUDA_ARCHITECTURES 90a 80)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# cuBLASLt: toolkit first, then the nvidia-cublas wheel of the Python in use.
set(_cublas_hints "")
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c
      "import importlib.util as u, os\ns = u.find_spec('nvidia')\nprint(';'.join(os.path.join(p, 'cu13') for p in (s.submodule_search_locations or [])) if s else '')"
    OUTPUT_VARIABLE _cublas_hints OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
find_path(CUBLASLT_INCLUDE_DIR cublasLt.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_cublas_hints} PATH_SUFFIXES include)
find_library(CUBLASLT_LIBRARY NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12
             HINTS ${CUDAToolkit_LIBRARY_DIR} ${_cublas_hints} PATH_SUFFIXES lib lib64)
if(NOT CUBLASLT_INCLUDE_DIR OR NOT CUBLASLT_LIBRARY)
  if(BASED_CORE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "BASED_CORE_CUDA=ON but cuBLASLt was not found (install the CUDA toolkit's cuBLAS or `pip install nvidia-cublas`)")
  endif()
  message(WARNING "based_core: cuBLASLt not found (toolkit or nvidia-cublas wheel); building the CPU backend only")
  return()
endif()
get_filename_component(CUBLASLT_LIBRARY_DIR ${CUBLASLT_LIBRARY} DIRECTORY)
message(STATUS "based_core: CUDA ${CUDAToolkit_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES}, cuBLASLt ${CUBLASLT_LIBRARY}")
set(BASED_CORE_HAVE_CUDA ON)
set(BASED_CORE_CUDA_VERSION_STR "${CUDAToolkit_VERSION}")
string(REPLACE ";" "," BASED_CORE_CUDA_ARCHS_STR "${CMAKE_CUDA_ARCHITECTURES}")
