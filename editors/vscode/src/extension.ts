// lmrs for VS Code: starts `lmrs lsp` with vscode-languageclient and shows its
// `textDocument/inlineCompletion` answers as ghost text through an InlineCompletionItemProvider.
// All the intelligence (prompting, the model, caching, cancellation) is in the server.

import * as vscode from 'vscode';
import * as fs from 'fs';
import { spawn } from 'child_process';
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State as ClientState,
  StaticFeature,
  FeatureState,
  ShowMessageNotification,
  ShowMessageParams,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
  WorkDoneProgressCreateParams,
  ProgressToken,
} from 'vscode-languageclient/node';
import { DEFAULTS, Settings, languageEnabled, needsRestart, readSettings, serverOptions } from './config';
import { StatusModel } from './status';
import { Found, findServer, notFoundMessage } from './server';
import { toItems, triggerKind } from './inline';

let client: LanguageClient | undefined;
let settings: Settings = DEFAULTS;
const status = new StatusModel();
let output: vscode.OutputChannel;
let extensionPath = '';
/** The binary the running client was started with. */
let server: Found | undefined;

/** Whether `p` is a file this process may execute (Windows: an existing file). */
function isExecutable(p: string): boolean {
  try {
    if (!fs.statSync(p).isFile()) return false;
    if (process.platform === 'win32') return true;
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The server binary (see `findServer` for the order). A bundled binary that lost its mode bit in the .vsix gets it back. */
function resolveServer(): Found | undefined {
  const bundled = `${extensionPath}/server/lmrs`;
  if (!settings.serverPath && process.platform !== 'win32' && fs.existsSync(bundled) && !isExecutable(bundled)) {
    try {
      fs.chmodSync(bundled, 0o755);
    } catch (e) {
      output.appendLine(`[error] cannot make ${bundled} executable: ${e}`);
    }
  }
  return findServer({
    configured: settings.serverPath,
    extensionPath,
    platform: process.platform,
    home: process.env.HOME ?? process.env.USERPROFILE,
    pathEnv: process.env.PATH ?? process.env.Path,
    isExecutable,
  });
}

function loadSettings(): Settings {
  const cfg = vscode.workspace.getConfiguration('lmrs');
  return readSettings((k, d) => cfg.get(k, d));
}

/**
 * Watches the server's model-load progress and error messages for the status bar.
 *
 * vscode-languageclient's own ProgressFeature answers `window/workDoneProgress/create` with a
 * notification popup, and the client shows `window/showMessage` itself. A static feature's
 * `initialize` runs after the built-in features' (and before the client sends `initialized`,
 * which is what makes the server start loading), so the handlers set here replace those, in time.
 */
class StatusFeature implements StaticFeature {
  constructor(private readonly c: LanguageClient) {}
  fillClientCapabilities(caps: { window?: { workDoneProgress?: boolean } }): void {
    caps.window = caps.window ?? {};
    caps.window.workDoneProgress = true;
  }
  getState(): FeatureState {
    return { kind: 'static' };
  }
  initialize(): void {
    this.c.onRequest(WorkDoneProgressCreateRequest.type, (p: WorkDoneProgressCreateParams) => {
      const token: ProgressToken = p.token;
      const sub = this.c.onProgress(WorkDoneProgress.type, token, (value) => {
        status.progress(value, token);
        if (value.kind === 'end') sub.dispose();
      });
      return null;
    });
    this.c.onNotification(ShowMessageNotification.type, (m: ShowMessageParams) => {
      status.showMessage(m.type, m.message);
      output.appendLine(`[message] ${m.message}`);
      const show =
        m.type === 1 ? vscode.window.showErrorMessage : m.type === 2 ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
      // A missing model: the message names the `lmrs pull` that gets it.
      const actions = status.pullName && m.type === 1 ? ['Pull model', 'Show Log'] : ['Show Log'];
      void show(m.message, ...actions).then((choice) => {
        if (choice === 'Show Log') output.show(true);
        else if (choice === 'Pull model') void vscode.commands.executeCommand('lmrs.pullModel', status.pullName);
      });
    });
  }
  clear(): void {}
}

function createClient(binary: string): LanguageClient {
  const exec: ServerOptions = {
    command: binary,
    args: ['lsp'],
    options: { env: { ...process.env, LMRS_LOG: settings.logLevel } },
  };
  const options: LanguageClientOptions = {
    // Every file: the server decides per language (and we gate with lmrs.languages).
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: serverOptions(settings, process.env.HOME),
    // The server's stderr (its log) goes to this channel.
    outputChannel: output,
    // Restarts are ours (lmrs.restart); don't pop the client's own dialogs on crashes.
    connectionOptions: { maxRestartCount: 2 },
  };
  const c = new LanguageClient('lmrs', 'lmrs', exec, options);
  c.registerFeature(new StatusFeature(c));
  c.onDidChangeState((e) => {
    if (e.newState === ClientState.Stopped) status.stopped();
  });
  return c;
}

async function start(): Promise<void> {
  status.starting();
  server = resolveServer();
  if (!server) {
    const message = notFoundMessage(settings.serverPath);
    status.showMessage(1, message);
    output.appendLine(`[error] ${message}`);
    void vscode.window.showErrorMessage(message, 'Open Settings', 'Show Log').then((c) => {
      if (c === 'Open Settings') void vscode.commands.executeCommand('workbench.action.openSettings', 'lmrs.serverPath');
      else if (c) output.show(true);
    });
    return;
  }
  output.appendLine(`[info] server: ${server.path} (${server.source})`);
  client = createClient(server.path);
  try {
    await client.start();
  } catch (e) {
    status.showMessage(1, `lmrs: could not start \`${server.path} lsp\`: ${e}`);
    output.appendLine(`[error] could not start ${server.path}: ${e}`);
    void vscode.window.showErrorMessage(
      `lmrs: could not start \`${server.path} lsp\`. Set lmrs.serverPath to the lmrs executable.`,
      'Show Log',
    ).then((c) => c && output.show(true));
  }
}

/**
 * Runs `lmrs pull NAME` in a terminal (its progress lines show there), then restarts the server so
 * it loads the model. The terminal stays open with the outcome.
 */
async function pullModel(name?: string): Promise<void> {
  const binary = server?.path ?? resolveServer()?.path;
  if (!binary) {
    void vscode.window.showErrorMessage(notFoundMessage(settings.serverPath));
    return;
  }
  const model =
    name ??
    status.pullName ??
    (await vscode.window.showInputBox({ prompt: 'lmrs pull: model name (lmrs pull --list shows them)', value: 'qwen2.5-coder:1.5b' }));
  if (!model) return;
  const write = new vscode.EventEmitter<string>();
  const done = new vscode.EventEmitter<number | void>();
  const crlf = (text: string) => text.replace(/\r?\n/g, '\r\n');
  const pty: vscode.Pseudoterminal = {
    onDidWrite: write.event,
    onDidClose: done.event,
    open: () => {
      write.fire(crlf(`$ ${binary} pull ${model}\n`));
      const child = spawn(binary, ['pull', model], { env: process.env });
      child.stdout.on('data', (d: Buffer) => write.fire(crlf(d.toString())));
      child.stderr.on('data', (d: Buffer) => write.fire(crlf(d.toString())));
      child.on('error', (e) => write.fire(crlf(`\nlmrs pull could not run: ${e}\n`)));
      child.on('close', (code) => {
        if (code === 0) {
          write.fire(crlf(`\n${model} is in place; restarting the lmrs server.\n`));
          void stop().then(start);
        } else {
          write.fire(crlf(`\nlmrs pull failed (exit ${code}).\n`));
          void vscode.window.showErrorMessage(`lmrs: \`lmrs pull ${model}\` failed; see the terminal "lmrs pull".`);
        }
      });
    },
    close: () => {},
  };
  vscode.window.createTerminal({ name: 'lmrs pull', pty }).show(true);
}

async function stop(): Promise<void> {
  const c = client;
  client = undefined;
  if (c) {
    try {
      await c.stop(5000);
    } catch {
      /* already dead */
    }
  }
  status.stopped();
}

class Provider implements vscode.InlineCompletionItemProvider {
  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const c = client;
    if (!c || !c.isRunning() || !settings.enable || !languageEnabled(settings.languages, document.languageId)) return undefined;
    const params = {
      textDocument: c.code2ProtocolConverter.asTextDocumentIdentifier(document),
      position: c.code2ProtocolConverter.asPosition(position),
      context: { triggerKind: triggerKind(context.triggerKind) },
    };
    status.requestStarted();
    try {
      // The client sends pending didChange notifications before the request, and cancelling
      // `token` (VS Code does when you type on) sends $/cancelRequest.
      const result = await c.sendRequest('textDocument/inlineCompletion', params, token);
      return toItems(result).map(
        (i) => new vscode.InlineCompletionItem(i.text, i.range ? c.protocol2CodeConverter.asRange(i.range) : new vscode.Range(position, position)),
      );
    } catch (e) {
      if (!token.isCancellationRequested) output.appendLine(`[inlineCompletion] ${e}`);
      return undefined;
    } finally {
      status.requestEnded();
    }
  }
}

export async function activate(ctx: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('lmrs');
  extensionPath = ctx.extensionPath;
  settings = loadSettings();
  status.setEnabled(settings.enable);

  const item = vscode.window.createStatusBarItem('lmrs.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'lmrs';
  item.command = 'lmrs.toggle';
  const render = () => {
    const v = status.view();
    item.text = v.text;
    item.tooltip = v.tooltip;
    item.backgroundColor = v.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    // A missing model: a click pulls it instead of toggling suggestions.
    item.command = v.pull ? { title: 'Pull model', command: 'lmrs.pullModel', arguments: [v.pull] } : 'lmrs.toggle';
  };
  status.onChange(render);
  render();
  item.show();

  ctx.subscriptions.push(
    output,
    item,
    vscode.languages.registerInlineCompletionItemProvider({ pattern: '**' }, new Provider()),
    vscode.commands.registerCommand('lmrs.toggle', async () => {
      const cfg = vscode.workspace.getConfiguration('lmrs');
      await cfg.update('enable', !settings.enable, vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand('lmrs.restart', async () => {
      await stop();
      await start();
    }),
    vscode.commands.registerCommand('lmrs.showLog', () => output.show(true)),
    vscode.commands.registerCommand('lmrs.pullModel', (name?: string) => pullModel(typeof name === 'string' ? name : undefined)),
    vscode.commands.registerCommand('lmrs.suggest', () => vscode.commands.executeCommand('editor.action.inlineSuggest.trigger')),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('lmrs')) return;
      const old = settings;
      settings = loadSettings();
      status.setEnabled(settings.enable);
      if (needsRestart(old, settings)) {
        await stop();
        await start();
      } else if (client?.isRunning()) {
        // The server merges these over its configuration and reloads the model if needed.
        await client.sendNotification('workspace/didChangeConfiguration', { settings: { lmrs: serverOptions(settings, process.env.HOME) } });
      }
    }),
    { dispose: () => void stop() },
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}
