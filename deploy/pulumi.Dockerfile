# The kliv operator with the Pulumi engine: deploy/Dockerfile's image plus the Pulumi CLI and its
# plugins, pinned to the SDK versions kliv installs (docs/pulumi.md), from files beside this one
# (fetched once where there is network), so the image never downloads anything at run time:
#   pulumi-v3.272.0-linux-x64.tar.gz
#   pulumi-resource-postgresql-v3.18.2-linux-amd64.tar.gz
#   pulumi-resource-aws-v7.51.1-linux-amd64.tar.gz   (only with S3, Secrets Manager or Lambda)
# Build (linux/amd64): docker build -f deploy/pulumi.Dockerfile \
#   --build-arg BASE=ghcr.io/kliv-cloud/kliv-operator:latest deploy/
# tests/unit/test_pulumi_program.py::TestDocs checks these versions against the installed SDKs.
ARG BASE=ghcr.io/kliv-cloud/kliv-operator:latest
ARG PULUMI_VERSION=3.272.0

# The CLI and plugins are unpacked in a stage of their own: no tarball stays in the final image.
FROM ${BASE} AS plugins
ARG PULUMI_VERSION
USER root
COPY pulumi-v${PULUMI_VERSION}-linux-x64.tar.gz pulumi-resource-*.tar.gz /tmp/pulumi/
RUN tar -xzf /tmp/pulumi/pulumi-v${PULUMI_VERSION}-linux-x64.tar.gz -C /opt \
    && mkdir -p /opt/pulumi-home && export PULUMI_HOME=/opt/pulumi-home PATH=/opt/pulumi:$PATH \
    && for file in /tmp/pulumi/pulumi-resource-*.tar.gz; do \
        set -- $(basename "$file" | sed -E 's/^pulumi-resource-([a-z]+)-v([0-9.]+)-.*/\1 \2/'); \
        pulumi plugin install resource "$1" "$2" --file "$file"; \
    done

FROM ${BASE}
COPY --from=plugins /opt/pulumi /opt/pulumi
COPY --from=plugins --chown=10001 /opt/pulumi-home /home/kliv/.pulumi
ENV PATH=/opt/pulumi:$PATH PULUMI_HOME=/home/kliv/.pulumi PULUMI_SKIP_UPDATE_CHECK=true KLIV_ENGINE=pulumi
USER 10001
ENTRYPOINT ["kliv", "operator"]
