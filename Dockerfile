# The gan-ddp image: one image for every task of a cluster job (the coordinator and the workers);
# its entry point is `launch`, which reads the task's part from the environment (see the README,
# "Running on a cluster"). Build from a checkout:  docker build -t gan-ddp .

# ---- build: compile the TypeScript, bundle the web pages, build the native addon (C, no BLAS).
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# npm ci builds everything (the prepare and install scripts); tfjs-node is optional and, where its
# download works, makes the image use native TensorFlow. Then the build tools leave.
RUN npm ci --no-audit --no-fund \
 && test -f native/build/Release/gan_native.node \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf native/build/Release/obj.target native/build/Release/.deps

# ---- run: Node and what the program needs at run time, as an unprivileged user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/native/build/Release/gan_native.node ./native/build/Release/gan_native.node
COPY --from=build /app/eval/judge ./eval/judge
# A judge of --eval-every trained for other digits is cached in .cache/ beside the package; runs go to the volume.
RUN mkdir -p /app/.cache /runs && chown node:node /app/.cache /runs
USER node
VOLUME /runs
# Workers, the dashboard and the worker page share the coordinator's one port.
EXPOSE 8765
ENTRYPOINT ["node", "dist/cli/launch.js"]
CMD ["--out", "/runs/gan-ddp"]
