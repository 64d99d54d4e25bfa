# The kliv operator with the Pulumi engine: deploy/Dockerfile plus the Pulumi CLI and its plugins,
# pinned to the SDK versions kliv installs (docs/pulumi.md), from files beside this one (fetched
# once where there is network), so the image never downloads anything at run time:
#   pulumi-v3.272.0-linux-x64.tar.gz
#   pulumi-resource-postgresql-v3.18.2-linux-amd64.tar.gz
#   pulumi-resource-aws-v7.51.1-linux-amd64.tar.gz   (only with S3, Secrets Manager or Lambda)
# Build: docker build -f deploy/pulumi.Dockerfile --build-arg BASE=<the kliv operator image> deploy/
ARG BASE=kliv-operator:latest
FROM ${BASE}
USER root
COPY pulumi-v3.272.0-linux-x64.tar.gz pulumi-resource-*.tar.gz /tmp/pulumi/
RUN tar -xzf /tmp/pulumi/pulumi-v3.272.0-linux-x64.tar.gz -C /opt \
    && rm /tmp/pulumi/pulumi-v3.272.0-linux-x64.tar.gz
ENV PATH=/opt/pulumi:$PATH PULUMI_HOME=/home/kliv/.pulumi PULUMI_SKIP_UPDATE_CHECK=true KLIV_ENGINE=pulumi
USER 10001
RUN for file in /tmp/pulumi/pulumi-resource-*.tar.gz; do \
        name=$(basename "$file" | sed -E 's/^pulumi-resource-([a-z]+)-v([0-9.]+)-.*/\1 \2/'); \
        pulumi plugin install resource $name --file "$file"; \
    done
ENTRYPOINT ["kliv", "operator"]
