# lastcall-installer: busybox plus /lastcall, for the init container of
# deploy/prestop.yaml variant (b), which copies lastcall into a volume that the
# app container's preStop hook runs it from. The lastcall image itself
# (docker/Dockerfile) is FROM scratch and has no `cp` to do that.
#
#     docker build -f docker/Dockerfile -t lastcall:0.1.0 .
#     docker build -f deploy/installer.Dockerfile -t lastcall-installer:0.1.0 deploy
#
# The build context can be any directory: nothing is copied from it.

ARG LASTCALL_IMAGE=lastcall:0.1.0
FROM ${LASTCALL_IMAGE} AS lastcall

FROM busybox:1.37
COPY --from=lastcall /lastcall /lastcall
