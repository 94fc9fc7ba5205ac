# Install rules for embedding based_core in C++ programs:
#   include/based_core/*.h                 the public API (no CUDA headers needed)
#   lib/libbased_core.a (.so with BUILD_SHARED_LIBS)
#   lib/libbased_core_cuda.so              the CUDA backend, loaded at run time (when built)
#   bin/based-generate                     the command-line app (BASED_CORE_APPS)
#   lib/cmake/based_core/                  find_package(based_core CONFIG) -> based_core::based_core
# Included from the top level when BASED_CORE_INSTALL is on (not in wheel builds).
include(CMakePackageConfigHelpers)

set(BASED_CORE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/based_core)

install(TARGETS based_core EXPORT based_coreTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/cpp/include/based_core DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/based_core/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/based_core)
install(EXPORT based_coreTargets NAMESPACE based_core:: DESTINATION ${BASED_CORE_CMAKE_DIR})

if(TARGET based-generate)
  install(TARGETS based-generate RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
if(TARGET based_core_cuda)
  # Not part of the link interface: the core dlopen()s it (see cpp/src/backends.cpp).
  install(TARGETS based_core_cuda LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

# Installed programs find the CUDA backend in the install's lib dir without
# LD_LIBRARY_PATH: the core also tries this path (after the loader's search).
set_source_files_properties(${PROJECT_SOURCE_DIR}/cpp/src/backends.cpp TARGET_DIRECTORY based_core
  PROPERTIES COMPILE_DEFINITIONS "BASED_CORE_INSTALL_LIBDIR=\"${CMAKE_INSTALL_FULL_LIBDIR}\"")

# The config file re-finds what the exported target links publicly (OpenMP).
get_target_property(_based_core_iface based_core INTERFACE_LINK_LIBRARIES)
set(BASED_CORE_NEEDS_OPENMP OFF)
if("OpenMP::OpenMP_CXX" IN_LIST _based_core_iface)
  set(BASED_CORE_NEEDS_OPENMP ON)
endif()
set(BASED_CORE_SHARED OFF)
if(BASED_CORE_LIBRARY_KIND STREQUAL "SHARED")
  set(BASED_CORE_SHARED ON)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/based_coreConfig.cmake.in
  ${PROJECT_BINARY_DIR}/based_coreConfig.cmake
  INSTALL_DESTINATION ${BASED_CORE_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
# 0.x: minor versions may break the API, so a request for 0.1 accepts 0.1.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/based_coreConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/based_coreConfig.cmake ${PROJECT_BINARY_DIR}/based_coreConfigVersion.cmake
  DESTINATION ${BASED_CORE_CMAKE_DIR})
