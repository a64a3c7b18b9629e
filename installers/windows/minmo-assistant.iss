; Inno Setup script: the Windows installer around the PyInstaller folder.
; Build on Windows after the spec:  iscc installers\windows\minmo-assistant.iss
; (Inno Setup 6: https://jrsoftware.org/isinfo.php). Output: dist\MinMo-Assistant-Setup-<version>.exe
; Per-user install (no administrator rights), Start menu entry, optional desktop icon, uninstaller.

#define AppName "MinMo Assistant"
#define AppVersion "0.1.0"
#define BundleDir "..\..\dist\minmo-assistant"

[Setup]
AppId={{6B0E1C52-9A57-4C1E-9C0B-2F7B0D6C4A11}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=MinMo Assistant developers
DefaultDirName={localappdata}\Programs\MinMo Assistant
DefaultGroupName={#AppName}
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=MinMo-Assistant-Setup-{#AppVersion}
SetupIconFile=..\..\assets\icon\minmo.ico
UninstallDisplayIcon={app}\MinMo Assistant.exe
Compression=lzma2/ultra64
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
LicenseFile=..\..\LICENSE
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\MinMo Assistant.exe"
Name: "{group}\{#AppName} self-test"; Filename: "{app}\minmo-assistant.exe"; Parameters: "--self-test"
Name: "{group}\{cm:UninstallProgram,{#AppName}}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\MinMo Assistant.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\MinMo Assistant.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
