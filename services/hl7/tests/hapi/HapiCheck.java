// Parses each HL7 v2 message file given on the command line with HAPI's PipeParser and its
// default validation rules, and prints one line per file: OK <structure> <MSA-1> <ERR code>,
// or FAIL <reason>. Exit status 1 if any file failed. Used by cloudpacs' tests as an
// independent parser of the ACKs and ORU^R01 messages the hl7 service produces.
import ca.uhn.hl7v2.DefaultHapiContext;
import ca.uhn.hl7v2.HapiContext;
import ca.uhn.hl7v2.model.Message;
import ca.uhn.hl7v2.parser.PipeParser;
import ca.uhn.hl7v2.util.Terser;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

public class HapiCheck {
  public static void main(String[] args) throws Exception {
    HapiContext context = new DefaultHapiContext();
    PipeParser parser = context.getPipeParser();
    boolean failed = false;
    for (String path : args) {
      String text = new String(Files.readAllBytes(Paths.get(path)), StandardCharsets.UTF_8);
      try {
        Message message = parser.parse(text);
        Terser terser = new Terser(message);
        String structure = message.getName();
        String msa = "";
        String err = "";
        if (structure.startsWith("ACK")) {
          msa = terser.get("/MSA-1");
          String version = message.getVersion();
          // ERR-1 (ELD) up to v2.4; withdrawn in v2.5, where ERR-3 holds the code.
          if (version.startsWith("2.3") || version.startsWith("2.4")) {
            err = nz(terser.get("/ERR-1-4-1"));
          } else {
            err = nz(terser.get("/ERR-3-1"));
          }
        } else {
          msa = nz(terser.get("/PATIENT_RESULT/PATIENT/PID-3-1"));
          err = nz(terser.get("/PATIENT_RESULT/ORDER_OBSERVATION/OBSERVATION(1)/OBX-5"));  // the second OBX (0-based)
        }
        System.out.println("OK " + structure + " " + nz(msa) + " " + err);
      } catch (Exception e) {
        failed = true;
        System.out.println("FAIL " + e.toString().replace('\n', ' '));
      }
    }
    System.exit(failed ? 1 : 0);
  }

  private static String nz(String value) {
    return value == null ? "" : value;
  }
}
