// lmrs for VS Code: starts `lmrs lsp` with vscode-languageclient and shows its
// `textDocument/inlineCompletion` answers as ghost text through an InlineCompletionItemProvider.
// All the intelligence (prompting, the model, caching, cancellation) is in the server.

import * as vscode from 'vscode';
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
import { toItems, triggerKind } from './inline';

let client: LanguageClient | undefined;
let settings: Settings = DEFAULTS;
const status = new StatusModel();
let output: vscode.OutputChannel;

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
        status.progress(value);
        if (value.kind === 'end') sub.dispose();
      });
      return null;
    });
    this.c.onNotification(ShowMessageNotification.type, (m: ShowMessageParams) => {
      status.showMessage(m.type, m.message);
      output.appendLine(`[message] ${m.message}`);
      const show =
        m.type === 1 ? vscode.window.showErrorMessage : m.type === 2 ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
      void show(m.message, 'Show Log').then((choice) => choice && output.show(true));
    });
  }
  clear(): void {}
}

function createClient(): LanguageClient {
  const server: ServerOptions = {
    command: settings.serverPath,
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
  const c = new LanguageClient('lmrs', 'lmrs', server, options);
  c.registerFeature(new StatusFeature(c));
  c.onDidChangeState((e) => {
    if (e.newState === ClientState.Stopped) status.stopped();
  });
  return c;
}

async function start(): Promise<void> {
  status.starting();
  client = createClient();
  try {
    await client.start();
  } catch (e) {
    status.showMessage(1, `lmrs: could not start \`${settings.serverPath} lsp\`: ${e}`);
    output.appendLine(`[error] could not start ${settings.serverPath}: ${e}`);
    void vscode.window.showErrorMessage(
      `lmrs: could not start \`${settings.serverPath} lsp\`. Set lmrs.serverPath to the lmrs executable.`,
      'Show Log',
    ).then((c) => c && output.show(true));
  }
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
