/**
 * deploy/k8s: every manifest checked against the Kubernetes API schema (kubernetes-models; for the
 * JobSet and the PyTorchJob, the Job and pod templates they embed), and each way of running a job
 * started as its pods would be: one network namespace per pod, whose /etc/hosts plays the
 * cluster's DNS (the pods' hostnames under their Service), and the environment Kubernetes, JobSet
 * or the training operator gives each pod, read from the manifest itself. Needs root and ip for
 * the runs.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { JobTemplateSpec } from 'kubernetes-models/batch/v1/JobTemplateSpec';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { PodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import type { Env } from '../cli/cluster-env.js';
import { Lan } from '../scripts/lan.js';
import { smallData, tempDir } from './helpers.js';
import { type Proc, ROOT, epochsOf, expectEveryEpochExact, netnsMissing, requireBuild, writeIdxDir } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';
import { TINY_LAUNCH_FLAGS, spawnLaunch, tokenFile } from './util-launch.js';

const DIR = join(ROOT, 'deploy', 'k8s');
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function manifest(name: string): Obj[] {
  return parseAllDocuments(readFileSync(join(DIR, name), 'utf8')).map((d) => {
    if (d.errors.length) throw new Error(`${name}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  });
}

/** Validate one object against the API schema of its kind (what `kubectl apply --dry-run=server` checks of its shape). */
function validate(o: Obj): void {
  const core: Record<string, { new (x: Obj): { validate(): void } }> = { Job, Service, Secret, PersistentVolumeClaim };
  const Model = core[o.kind];
  if (Model) return new Model(o).validate();
  if (o.kind === 'JobSet') {
    expect(o.apiVersion).toBe('jobset.x-k8s.io/v1alpha2');
    expect(Object.keys(o.spec).sort()).toEqual(['failurePolicy', 'network', 'replicatedJobs', 'successPolicy']);
    for (const rj of o.spec.replicatedJobs) {
      expect(Object.keys(rj).sort()).toEqual(['name', 'replicas', 'template']);
      new JobTemplateSpec(rj.template).validate();
    }
    expect(o.spec.successPolicy.targetReplicatedJobs.every((n: string) => o.spec.replicatedJobs.some((rj: Obj) => rj.name === n))).toBe(true);
    return;
  }
  if (o.kind === 'PyTorchJob') {
    expect(o.apiVersion).toBe('kubeflow.org/v1');
    expect(Object.keys(o.spec.pytorchReplicaSpecs).sort()).toEqual(['Master', 'Worker']);
    for (const spec of Object.values(o.spec.pytorchReplicaSpecs) as Obj[]) {
      expect(['Always', 'OnFailure', 'Never', 'ExitCode']).toContain(spec.restartPolicy);
      new PodTemplateSpec(spec.template).validate();
      // The operator sets RANK, WORLD_SIZE and MASTER_* only in the container named pytorch.
      expect(spec.template.spec.containers[0].name).toBe('pytorch');
    }
    return;
  }
  throw new Error(`no schema for kind ${o.kind}`);
}

describe('the Kubernetes manifests', () => {
  it.each(['secret.yaml', 'pvc.yaml', 'indexed-job.yaml', 'jobset.yaml', 'pytorchjob.yaml'])('%s is valid against the API schema', (file) => {
    const docs = manifest(file);
    expect(docs.length).toBeGreaterThan(0);
    for (const o of docs) expect(() => validate(o), `${file}: ${o.kind} ${o.metadata?.name}`).not.toThrow();
  });

  it('an invalid manifest is caught by the same check (the schema is really applied)', () => {
    const [, , job] = manifest('indexed-job.yaml');
    expect(() => validate({ ...job, spec: { ...job!.spec, completions: 'five' } })).toThrow();
    expect(() => validate({ ...job, spec: { ...job!.spec, template: { spec: { containers: [{ image: 'x' }] } } } })).toThrow();
  });

  it('every pod reads the token from the Secret and every run directory is on the volume', () => {
    for (const file of ['indexed-job.yaml', 'jobset.yaml', 'pytorchjob.yaml']) {
      for (const pod of podsOf(file)) {
        expect(pod.env.GAN_DDP_TOKEN_FILE, `${file} ${pod.hostname}`).toBe('/etc/gan-ddp/token/token');
        expect(pod.args.join(' ')).not.toMatch(/--token/);
        const out = pod.args.indexOf('--out');
        if (out >= 0) expect(pod.args[out + 1]!.startsWith('/runs/')).toBe(true);
      }
    }
  });
});

interface Pod {
  hostname: string;
  /** Names the cluster's DNS gives this pod. */
  dns: string[];
  env: Env;
  args: string[];
}

function containerEnv(c: Obj): Env {
  return Object.fromEntries((c.env ?? []).map((e: Obj) => [e.name, e.value]));
}

/** The pods a manifest's workload makes, with what each is told: its Kubernetes variables, hostname and DNS names. */
function podsOf(file: string): Pod[] {
  const docs = manifest(file);
  const job = docs.find((o) => o.kind === 'Job');
  if (job) {
    const spec = job.spec.template.spec;
    const c = spec.containers[0];
    return Array.from({ length: job.spec.completions }, (_, i) => {
      const hostname = `${job.metadata.name}-${i}`;
      return { hostname, dns: [`${hostname}.${spec.subdomain}`], env: { ...containerEnv(c), JOB_COMPLETION_INDEX: String(i), HOSTNAME: hostname }, args: c.args };
    });
  }
  const set = docs.find((o) => o.kind === 'JobSet');
  if (set) {
    return set.spec.replicatedJobs.flatMap((rj: Obj) => Array.from({ length: rj.replicas }, (_, j) => Array.from({ length: rj.template.spec.completions }, (_, p) => {
      const c = rj.template.spec.template.spec.containers[0];
      const hostname = `${set.metadata.name}-${rj.name}-${j}-${p}`;
      return { hostname, dns: [`${hostname}.${set.spec.network.subdomain}`], env: { ...containerEnv(c), JOB_COMPLETION_INDEX: String(p), HOSTNAME: hostname }, args: c.args };
    })).flat());
  }
  const pj = docs.find((o) => o.kind === 'PyTorchJob')!;
  const { Master, Worker } = pj.spec.pytorchReplicaSpecs;
  const name = pj.metadata.name;
  const port = Master.template.spec.containers[0].ports.find((p: Obj) => p.name === 'pytorchjob-port').containerPort;
  const world = Master.replicas + Worker.replicas;
  const pod = (type: string, i: number, rank: number, spec: Obj): Pod => {
    const c = spec.template.spec.containers[0];
    const hostname = `${name}-${type}-${i}`;
    return { hostname, dns: [hostname], env: { ...containerEnv(c), RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: `${name}-master-0`, MASTER_PORT: String(port), HOSTNAME: hostname }, args: c.args };
  };
  return [pod('master', 0, 0, Master), ...Array.from({ length: Worker.replicas }, (_, i) => pod('worker', i, i + 1, Worker))];
}

const canNs = netnsMissing();

describe('each workload\'s pods, one network namespace each', () => {
  const { procs } = faultHarness();
  const lan = new Lan('gk8-', '10.79.0');
  const hostsDirs: string[] = [];
  afterAll(() => {
    lan.cleanup();
    for (const d of hostsDirs) rmSync(d, { recursive: true, force: true });
  });

  it.skipIf(!!canNs).each(['indexed-job.yaml', 'jobset.yaml', 'pytorchjob.yaml'])(`%s: every pod runs launch with its own environment and the run completes, each sample once${canNs ? ` [skipped: ${canNs}]` : ''}`, async (file) => {
    requireBuild();
    const pods = podsOf(file);
    const n = 160;
    const data = writeIdxDir(smallData(n));
    const volume = tempDir('gan-ddp-runs-');
    const secret = tokenFile();
    lan.cleanup();
    await lan.buildNet(pods.length - 1);
    const nsOf = (i: number) => (i === 0 ? lan.coord : lan.workerNs(i));
    const ipOf = (i: number) => (i === 0 ? lan.coordIp : lan.workerIp(i));
    // The cluster's DNS: every pod's names, seen from every pod (`ip netns exec` mounts /etc/netns/NS/hosts as /etc/hosts).
    const hosts = ['127.0.0.1 localhost', ...pods.map((p, i) => `${ipOf(i)} ${p.dns.join(' ')} ${p.hostname}`)].join('\n') + '\n';
    pods.forEach((_, i) => {
      const dir = `/etc/netns/${nsOf(i)}`;
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'hosts'), hosts);
      hostsDirs.push(dir);
    });
    // The pod's mounts: the Secret and the run volume.
    const mount = (s: string) => s.replace('/etc/gan-ddp/token/token', secret.file).replace(/^\/runs\//, `${volume}/`);
    const tasks: Proc[] = pods.map((p, i) => {
      const env = Object.fromEntries(Object.entries(p.env).map(([k, v]) => [k, v && mount(v)]));
      const args = [...p.args.map(mount), ...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', '1'];
      const t = spawnLaunch(`${file}:${p.hostname}`, env, args, ['ip', 'netns', 'exec', nsOf(i)]);
      procs.push(t);
      return t;
    });
    for (const t of tasks) expect((await t.waitExit(90_000)).code, t.output).toBe(0);
    expect(tasks[0]!.output).toMatch(/launch: coordinator/);
    for (const t of tasks.slice(1)) expect(t.output).toMatch(/launch: worker/);
    expectEveryEpochExact(epochsOf(join(volume, 'gan-ddp')), n, 1);
  }, 150_000);
});
