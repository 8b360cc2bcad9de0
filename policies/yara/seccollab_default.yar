/*
  SecCollab default rule set. Each rule says what it finds (description) and how bad it is
  (severity: low | medium | high | critical). Operators add rules as more *.yar files here;
  reload with `kill -HUP <pid>` or `POST /api/admin/scanner/reload`.
*/

rule EICAR_Test_File : test
{
    meta:
        description = "EICAR anti-virus test file (harmless; proves scanning works)"
        severity = "high"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar at 0 or ($eicar and filesize < 512)
}

rule PHP_Web_Shell : webshell
{
    meta:
        description = "PHP script that runs commands or code taken from the request"
        severity = "critical"
    strings:
        $php = "<?php" nocase
        $exec = /\b(system|shell_exec|passthru|exec|popen|proc_open|assert|eval)\s*\(\s*(base64_decode\s*\(\s*)?\$_(GET|POST|REQUEST|COOKIE|SERVER)/ nocase
        $bt = /`\s*\$_(GET|POST|REQUEST)\[/ nocase
    condition:
        $php and ($exec or $bt)
}

rule JSP_ASP_Web_Shell : webshell
{
    meta:
        description = "JSP or ASP page that runs commands taken from the request"
        severity = "critical"
    strings:
        $jsp = /Runtime\.getRuntime\(\)\.exec\(\s*request\.getParameter\(/
        $asp1 = /eval\s*\(?\s*Request(\.Form|\.QueryString|\.Item)?\s*\(/ nocase
        $asp2 = /Server\.CreateObject\(\s*"WScript\.Shell"\s*\)/ nocase
    condition:
        $jsp or $asp1 or ($asp2 and #asp2 > 0 and filesize < 1MB)
}

rule Office_AutoRun_Macro : macro
{
    meta:
        description = "Office document with a VBA macro that runs on open and can start programs"
        severity = "high"
    strings:
        $vba1 = "vbaProject.bin" nocase
        $vba2 = "_VBA_PROJECT" wide ascii
        $vba3 = "Attribute VB_Name" nocase
        $auto1 = "AutoOpen" nocase
        $auto2 = "Document_Open" nocase
        $auto3 = "Workbook_Open" nocase
        $auto4 = "Auto_Open" nocase
        $run1 = "Shell" nocase
        $run2 = "WScript.Shell" nocase
        $run3 = "CreateObject" nocase
    condition:
        any of ($vba*) and any of ($auto*) and any of ($run*)
}

rule PE_Executable_Content : executable
{
    meta:
        description = "Windows executable (PE) content, whatever the file is called"
        severity = "medium"
    condition:
        uint16(0) == 0x5A4D and uint32(0x3C) < filesize - 4 and uint32(uint32(0x3C)) == 0x00004550
}

rule PowerShell_Download_Cradle : script
{
    meta:
        description = "PowerShell that downloads and runs code (download cradle)"
        severity = "high"
    strings:
        $dl1 = "DownloadString(" nocase
        $dl2 = "DownloadFile(" nocase
        $dl3 = "Invoke-WebRequest" nocase
        $dl4 = "Net.WebClient" nocase
        $run1 = "IEX" nocase fullword
        $run2 = "Invoke-Expression" nocase
        $enc = /-e(nc(odedcommand)?)?\s+[A-Za-z0-9+\/]{40,}={0,2}/ nocase
    condition:
        (any of ($dl*) and any of ($run*)) or $enc
}
